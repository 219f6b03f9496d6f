"""Telemetry set-up per exporter and trace context carried through Kafka headers."""

from __future__ import annotations

import io
import queue
from concurrent import futures
from types import SimpleNamespace

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from services.platform.settings import TelemetrySettings
from services.platform.telemetry import (
    Telemetry,
    extract_kafka_context,
    inject_kafka_headers,
    setup_telemetry,
)


@pytest.fixture
def telemetry():
    built: list[Telemetry] = []

    def build(exporter: str = "none", **kwargs) -> Telemetry:
        settings = TelemetrySettings(exporter=exporter, **kwargs.pop("settings", {}))
        result = setup_telemetry(settings, "test-service", "instance-7", **kwargs)
        built.append(result)
        return result

    yield build
    for each in built:
        each.shutdown()


def test_span_context_round_trips_through_kafka_headers(telemetry):
    tracer = telemetry().tracer(__name__)

    with tracer.start_as_current_span("publish") as span:
        headers = inject_kafka_headers([("event_type", b"ContactStarted")])
    received = trace.get_current_span(extract_kafka_context(headers)).get_span_context()

    sent = span.get_span_context()
    assert (received.trace_id, received.span_id, received.trace_flags) == (
        sent.trace_id,
        sent.span_id,
        sent.trace_flags,
    )
    assert received.is_remote
    assert ("event_type", b"ContactStarted") in headers


def test_injecting_an_explicit_context_replaces_trace_headers_and_leaves_the_given_list_alone(telemetry):
    tracer = telemetry().tracer(__name__)
    with tracer.start_as_current_span("first"):
        consumed = inject_kafka_headers()
    with tracer.start_as_current_span("second") as second:
        context = trace.set_span_in_context(second)
    original = list(consumed)

    republished = inject_kafka_headers(consumed, context=context)

    assert consumed == original
    assert [key for key, _ in republished].count("traceparent") == 1
    received = trace.get_current_span(extract_kafka_context(republished)).get_span_context()
    assert received.span_id == second.get_span_context().span_id


def test_injecting_outside_any_span_adds_no_trace_headers():
    assert inject_kafka_headers([("k", b"v")]) == [("k", b"v")]


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("traceparent", None)],
        [("traceparent", b"not-a-traceparent")],
        [("traceparent", b"\xff\xfe")],
    ],
)
def test_records_without_a_usable_trace_context_extract_to_no_parent(headers):
    assert not trace.get_current_span(extract_kafka_context(headers)).get_span_context().is_valid


def test_none_exporter_still_gives_spans_valid_ids(telemetry):
    tracer = telemetry("none").tracer(__name__)

    with tracer.start_as_current_span("handle") as span:
        context = span.get_span_context()

    assert context.is_valid
    assert context.trace_flags.sampled


def test_console_exporter_writes_the_span_name_and_service(telemetry):
    out = io.StringIO()
    built = telemetry("console", console_out=out)

    with built.tracer(__name__).start_as_current_span("AssignCall"):
        pass
    built.shutdown()

    assert '"name": "AssignCall"' in out.getvalue()
    assert '"service.name": "test-service"' in out.getvalue()


def test_only_the_first_set_up_in_a_process_installs_the_global_providers(telemetry):
    first = telemetry()
    second = telemetry()

    assert not second.is_global
    if first.is_global:
        assert trace.get_tracer_provider() is first.tracer_provider


class _TraceCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.received: queue.Queue[trace_service_pb2.ExportTraceServiceRequest] = queue.Queue()

    def Export(self, request, context):
        self.received.put(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsCollector(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.received: queue.Queue[metrics_service_pb2.ExportMetricsServiceRequest] = queue.Queue()

    def Export(self, request, context):
        self.received.put(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def collector():
    """An in-process stand-in for an OpenTelemetry collector's OTLP gRPC receiver."""
    spans, metrics = _TraceCollector(), _MetricsCollector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(spans, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield SimpleNamespace(endpoint=f"http://127.0.0.1:{port}", spans=spans.received, metrics=metrics.received)
    server.stop(None)


def _attributes(resource) -> dict[str, str]:
    return {attribute.key: attribute.value.string_value for attribute in resource.attributes}


def test_otlp_exporter_sends_spans_and_metrics_with_the_service_resource(telemetry, collector):
    built = telemetry("otlp", settings={"otlp_endpoint": collector.endpoint})

    with built.tracer(__name__).start_as_current_span("RecordIvrSelection"):
        built.meter(__name__).create_counter("commands_handled").add(1)
    built.shutdown()

    spans = collector.spans.get(timeout=10).resource_spans[0]
    resource = _attributes(spans.resource)
    assert (resource["service.name"], resource["service.instance.id"]) == ("test-service", "instance-7")
    assert spans.scope_spans[0].spans[0].name == "RecordIvrSelection"
    exported = collector.metrics.get(timeout=10).resource_metrics[0]
    assert "commands_handled" in [metric.name for scope in exported.scope_metrics for metric in scope.metrics]
