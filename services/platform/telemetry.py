"""Tracing and metrics for one process: providers, exporters, and trace context across Kafka and gRPC.

Every service builds one ``Telemetry`` in its ``main.py`` and passes its providers down. The first
``setup_telemetry`` in a process also installs its providers as OpenTelemetry's global ones (the API
allows that once per process); later calls, as when a test runs several services in one process, keep
their providers to themselves, so code should take tracers from the ``Telemetry`` it was given.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import grpc
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import client_interceptor, filters, server_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.platform.settings import TelemetrySettings

log = logging.getLogger(__name__)

KafkaHeaders = list[tuple[str, bytes]]

_PROPAGATOR = TraceContextTextMapPropagator()
_global_lock = threading.Lock()
_global_installed = False


@dataclass
class Telemetry:
    """The tracer and meter providers of one service; ``shutdown`` flushes what is still buffered.

    ``is_global`` tells whether these are also the process's global providers.
    """

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    is_global: bool
    _shut_down: bool = field(default=False, init=False, repr=False)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        """Export everything buffered now; True when both providers finished within the timeout."""
        spans_flushed = self.tracer_provider.force_flush(timeout_ms)
        metrics_flushed = self.meter_provider.force_flush(timeout_ms)
        return spans_flushed and metrics_flushed

    def shutdown(self) -> None:
        """Flush and close the exporters. Safe to call more than once."""
        if self._shut_down:
            return
        self._shut_down = True
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    settings: TelemetrySettings,
    service_name: str,
    instance_id: str,
    *,
    console_out: TextIO | None = None,
) -> Telemetry:
    """Build the providers for ``settings.exporter``: "otlp", "console" (to ``console_out``, default
    stdout) or "none" (spans still get valid ids and context still propagates; nothing is exported)."""
    resource = Resource.create({SERVICE_NAME: service_name, SERVICE_INSTANCE_ID: instance_id})
    # The composition root owns the lifetime: Telemetry.shutdown flushes, so no atexit hooks pile up
    # when a test process builds many providers.
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    span_exporter = _span_exporter(settings, console_out)
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=_metric_readers(settings, console_out), shutdown_on_exit=False
    )
    return Telemetry(tracer_provider, meter_provider, _install_globally_once(tracer_provider, meter_provider))


def _span_exporter(settings: TelemetrySettings, console_out: TextIO | None) -> SpanExporter | None:
    if settings.exporter == "otlp":
        return OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    if settings.exporter == "console":
        return ConsoleSpanExporter(out=console_out or sys.stdout)
    return None


def _metric_readers(settings: TelemetrySettings, console_out: TextIO | None) -> Sequence[MetricReader]:
    exporter: MetricExporter
    if settings.exporter == "otlp":
        exporter = OTLPMetricExporter(endpoint=settings.otlp_endpoint)
    elif settings.exporter == "console":
        exporter = ConsoleMetricExporter(out=console_out or sys.stdout)
    else:
        return ()
    return (PeriodicExportingMetricReader(exporter, export_interval_millis=settings.metric_interval_ms),)


def _install_globally_once(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> bool:
    global _global_installed
    with _global_lock:
        if _global_installed:
            log.debug("global telemetry providers already set in this process; keeping these local")
            return False
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _global_installed = True
        return True


def inject_kafka_headers(headers: KafkaHeaders | None = None, context: Context | None = None) -> KafkaHeaders:
    """Return ``headers`` plus the W3C trace context of ``context`` (default: the current one).

    Trace headers already present are replaced, so re-publishing consumed headers never carries two
    parents. The given list is not modified.
    """
    trace_fields: dict[str, str] = {}
    _PROPAGATOR.inject(trace_fields, context=context)
    kept = [(key, value) for key, value in headers or () if key not in trace_fields]
    return kept + [(key, value.encode("utf-8")) for key, value in trace_fields.items()]


def extract_kafka_context(headers: Sequence[tuple[str, bytes | None]] | None) -> Context:
    """The trace context carried in a consumed record's headers (an empty context when there is none)."""
    carrier = {
        key: value.decode("utf-8", errors="replace") for key, value in headers or () if value is not None
    }
    return _PROPAGATOR.extract(carrier)


def server_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
) -> tuple[grpc.ServerInterceptor, ...]:
    """A server span per RPC, parented by the trace context in the caller's metadata.

    Health checks are not traced: orchestrator probes would otherwise flood the traces.
    """
    untraced = filters.negate(filters.health_check())
    return (server_interceptor(tracer_provider=tracer_provider, filter_=untraced),)


def traced_channel(
    target: str,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    credentials: grpc.ChannelCredentials,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A client channel that opens a client span per call and sends its trace context as metadata;
    ``credentials`` as ``identity.channel_credentials`` makes them (our services take nothing else)."""
    channel = grpc.secure_channel(target, credentials, options=options)
    # The instrumentation's interceptor implements its own interceptor interface (grpcext), not grpc's.
    return intercept_channel(channel, client_interceptor(tracer_provider=tracer_provider))
