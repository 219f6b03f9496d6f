{{/* One bounded context's Deployment and Service; each service template includes this with its name. */}}
{{- define "callcenter.service" -}}
{{- $name := .name -}}
{{- $svc := index .root.Values.services $name -}}
{{- $v := .root.Values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels: {app.kubernetes.io/name: {{ $name }}, app.kubernetes.io/part-of: callcenter}
spec:
  # One writer per context until commands are routed by partition ownership: a second replica would
  # be a second writer. Recreate, with a stable instance id, so the new pod fences the old one.
  replicas: 1
  strategy: {type: Recreate}
  selector:
    matchLabels: {app.kubernetes.io/name: {{ $name }}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: {{ $name }}, app.kubernetes.io/part-of: callcenter}
    spec:
      containers:
        - name: {{ $name }}
          image: "{{ $v.image.repository }}:{{ $v.image.tag }}"
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: ["python", "-m", "{{ $svc.module }}"]
          ports:
            - {name: grpc, containerPort: {{ $svc.grpcPort }}}
            {{- if $svc.httpPort }}
            - {name: http, containerPort: {{ $svc.httpPort }}}
            {{- end }}
          env:
            - {name: CC_ENVIRONMENT, value: cluster}
            - {name: CC_SERVICE_NAME, value: {{ $name }}}
            - {name: CC_INSTANCE_ID, value: "0"}
            - {name: CC_GRPC__ADDRESS, value: "0.0.0.0:{{ $svc.grpcPort }}"}
            {{- if $svc.httpPort }}
            - {name: CC_HTTP__ADDRESS, value: "0.0.0.0:{{ $svc.httpPort }}"}
            {{- end }}
            - {name: CC_KAFKA__BOOTSTRAP_SERVERS, value: {{ $v.kafka.bootstrapServers | quote }}}
            - {name: CC_KAFKA__SECURITY_PROTOCOL, value: {{ $v.kafka.securityProtocol }}}
            - {name: CC_KAFKA__SASL_MECHANISM, value: {{ $v.kafka.saslMechanism }}}
            - name: CC_KAFKA__SASL_USERNAME
              valueFrom: {secretKeyRef: {name: "{{ $v.kafka.credentialsSecretPrefix }}-{{ $name }}", key: username}}
            - name: CC_KAFKA__SASL_PASSWORD
              valueFrom: {secretKeyRef: {name: "{{ $v.kafka.credentialsSecretPrefix }}-{{ $name }}", key: password}}
            - {name: CC_KAFKA__SSL_CA_LOCATION, value: /etc/callcenter/kafka-ca/ca.crt}
            - {name: CC_TLS__CA_FILE, value: /etc/callcenter/tls/ca.crt}
            - {name: CC_TLS__CERT_FILE, value: /etc/callcenter/tls/tls.crt}
            - {name: CC_TLS__KEY_FILE, value: /etc/callcenter/tls/tls.key}
            - {name: CC_AUTH__ISSUER, value: {{ $v.auth.issuer | quote }}}
            - {name: CC_AUTH__AUDIENCE, value: {{ $v.auth.audience | quote }}}
            - {name: CC_AUTH__ALGORITHMS, value: {{ $v.auth.algorithms | quote }}}
            {{- if $v.auth.jwksUrl }}
            - {name: CC_AUTH__JWKS_URL, value: {{ $v.auth.jwksUrl | quote }}}
            {{- else }}
            - {name: CC_AUTH__PUBLIC_KEY_FILE, value: /etc/callcenter/token-key/public.pem}
            {{- end }}
            - {name: CC_CLICKHOUSE__URL, value: {{ $v.clickhouse.url | quote }}}
            - name: CC_PRIVACY__HMAC_KEY
              valueFrom: {secretKeyRef: {name: {{ $v.privacy.hmacKeySecret }}, key: hmac-key}}
            - {name: CC_TELEMETRY__EXPORTER, value: {{ $v.telemetry.exporter }}}
            - {name: CC_TELEMETRY__OTLP_ENDPOINT, value: {{ $v.telemetry.otlpEndpoint | quote }}}
          # The kubelet's gRPC probe speaks no TLS: the probe asks health over TLS from inside the pod.
          readinessProbe:
            exec: {command: ["python", "-m", "services.platform.probe", "--server-name", "{{ $name }}"]}
          livenessProbe:
            exec: {command: ["python", "-m", "services.platform.probe", "--server-name", "{{ $name }}"]}
            initialDelaySeconds: 10
            timeoutSeconds: 5
          resources: {{ toYaml $svc.resources | nindent 12 }}
          volumeMounts:
            - {name: tls, mountPath: /etc/callcenter/tls, readOnly: true}
            - {name: kafka-ca, mountPath: /etc/callcenter/kafka-ca, readOnly: true}
            {{- if not $v.auth.jwksUrl }}
            - {name: token-key, mountPath: /etc/callcenter/token-key, readOnly: true}
            {{- end }}
      volumes:
        - {name: tls, secret: {secretName: {{ $v.tls.secret }}}}
        - {name: kafka-ca, secret: {secretName: {{ $v.kafka.caSecret }}}}
        {{- if not $v.auth.jwksUrl }}
        - {name: token-key, secret: {secretName: {{ $v.auth.publicKeySecret }}}}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels: {app.kubernetes.io/name: {{ $name }}, app.kubernetes.io/part-of: callcenter}
spec:
  selector: {app.kubernetes.io/name: {{ $name }}}
  ports:
    - {name: grpc, port: {{ $svc.grpcPort }}, targetPort: grpc}
    {{- if $svc.httpPort }}
    - {name: http, port: {{ $svc.httpPort }}, targetPort: http}
    {{- end }}
{{- end -}}
