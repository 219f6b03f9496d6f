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
              valueFrom: {secretKeyRef: {name: {{ $v.kafka.credentialsSecret }}, key: username}}
            - name: CC_KAFKA__SASL_PASSWORD
              valueFrom: {secretKeyRef: {name: {{ $v.kafka.credentialsSecret }}, key: password}}
            - {name: CC_CLICKHOUSE__URL, value: {{ $v.clickhouse.url | quote }}}
            - name: CC_PRIVACY__HMAC_KEY
              valueFrom: {secretKeyRef: {name: {{ $v.privacy.hmacKeySecret }}, key: hmac-key}}
            - {name: CC_TELEMETRY__EXPORTER, value: {{ $v.telemetry.exporter }}}
            - {name: CC_TELEMETRY__OTLP_ENDPOINT, value: {{ $v.telemetry.otlpEndpoint | quote }}}
          readinessProbe:
            grpc: {port: {{ $svc.grpcPort }}}
          livenessProbe:
            grpc: {port: {{ $svc.grpcPort }}}
            initialDelaySeconds: 10
          resources: {{ toYaml $svc.resources | nindent 12 }}
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
