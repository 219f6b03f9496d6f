"""The gRPC server helpers against a real in-process server on port 0."""

from __future__ import annotations

import logging
import threading

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.platform.access import allow
from services.platform.errors import (
    ConcurrencyError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unavailable,
)
from services.platform.grpc_server import (
    INTERNAL_ERROR_DETAILS,
    PortTaken,
    RunningServer,
    ServiceRegistration,
    create_server,
)
from services.platform.health import Health
from services.platform.identity import Role
from services.platform.settings import TelemetrySettings
from services.platform.telemetry import server_interceptors, setup_telemetry, traced_channel
from tests.support.identity import call_credentials, secure_channel, server_security

PROBE_SERVICE = "test.platform.Probe"
PROBE_ACCESS = {
    f"/{PROBE_SERVICE}/{name}": allow(Role.SUPERVISOR)
    for name in ("Raise", "RaiseWhileStreaming", "CurrentTrace")
}
STOP_DEADLINE_S = 30

ERRORS = {
    b"invalid": InvalidArgument("priority must be between 1 and 5, got 9"),
    b"missing": NotFound("ticket 't-1' does not exist"),
    b"illegal": FailedPrecondition("agent 'a-1' is Offline and cannot accept an offer"),
    b"stale": ConcurrencyError("c-1", expected_version=3, actual_version=4),
    b"forbidden": PermissionDenied("an agent may change only its own state"),
    b"away": Unavailable("intake cannot write now: no broker answers"),
    b"busy": Overloaded("10000 writes are waiting for the log"),
}


class Probe:
    """A servicer built from generic handlers (bytes in, bytes out), so the test needs no generated code."""

    def Raise(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"bug":
            raise RuntimeError("secret internals")
        if request == b"abort":
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "aborted by the servicer")
        raise ERRORS[request]

    def RaiseWhileStreaming(self, request: bytes, context: grpc.ServicerContext):
        yield b"first"
        raise ERRORS[request]

    def CurrentTrace(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return format(trace.get_current_span().get_span_context().trace_id, "032x").encode()


def add_probe_to_server(servicer: Probe, server: grpc.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                PROBE_SERVICE,
                {
                    "Raise": grpc.unary_unary_rpc_method_handler(servicer.Raise),
                    "RaiseWhileStreaming": grpc.unary_stream_rpc_method_handler(servicer.RaiseWhileStreaming),
                    "CurrentTrace": grpc.unary_unary_rpc_method_handler(servicer.CurrentTrace),
                },
            ),
        )
    )


@pytest.fixture
def telemetry():
    built = setup_telemetry(TelemetrySettings(exporter="none"), "grpc-test", "0")
    yield built
    built.shutdown()


@pytest.fixture
def finished_spans(telemetry) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def running(telemetry):
    server = create_server(
        "127.0.0.1:0",
        [ServiceRegistration(add_probe_to_server, Probe(), PROBE_SERVICE)],
        max_workers=8,
        interceptors=server_interceptors(telemetry.tracer_provider),
        **server_security(PROBE_ACCESS),
    )
    yield server
    server.stop(None)


@pytest.fixture
def channel(running: RunningServer):
    with secure_channel(f"127.0.0.1:{running.port}", Role.SUPERVISOR) as channel:
        yield channel


def _check(channel: grpc.Channel, service: str = "") -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


@pytest.mark.parametrize("service", ["", PROBE_SERVICE])
def test_health_reports_serving_for_the_server_and_each_registered_service(channel, service):
    assert _check(channel, service) == health_pb2.HealthCheckResponse.SERVING


def test_health_reports_not_serving_once_stop_begins(running, channel):
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

    stopping = threading.Thread(target=running.stop, args=(STOP_DEADLINE_S,))
    stopping.start()
    try:
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        watch.cancel()
        stopping.join(STOP_DEADLINE_S)
    assert not stopping.is_alive()


def test_reflection_lists_the_health_service_and_the_registered_services(channel):
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())

    assert {health.SERVICE_NAME, PROBE_SERVICE} <= services


@pytest.mark.parametrize(
    ("request_name", "code"),
    [
        (b"invalid", grpc.StatusCode.INVALID_ARGUMENT),
        (b"missing", grpc.StatusCode.NOT_FOUND),
        (b"illegal", grpc.StatusCode.FAILED_PRECONDITION),
        (b"stale", grpc.StatusCode.FAILED_PRECONDITION),
        (b"forbidden", grpc.StatusCode.PERMISSION_DENIED),
        (b"away", grpc.StatusCode.UNAVAILABLE),
        (b"busy", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_a_domain_error_becomes_its_status_code_with_its_message(channel, request_name, code):
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(f"/{PROBE_SERVICE}/Raise")(request_name, timeout=10)

    assert raised.value.code() == code
    assert raised.value.details() == str(ERRORS[request_name])


def test_a_domain_error_in_a_response_stream_ends_the_stream_with_its_status_code(channel):
    responses = channel.unary_stream(f"/{PROBE_SERVICE}/RaiseWhileStreaming")(b"missing", timeout=10)

    assert next(responses) == b"first"
    with pytest.raises(grpc.RpcError) as raised:
        next(responses)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == str(ERRORS[b"missing"])


def test_an_unexpected_error_becomes_internal_without_its_details_and_is_logged(channel, caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(f"/{PROBE_SERVICE}/Raise")(b"bug", timeout=10)

    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details().startswith(INTERNAL_ERROR_DETAILS)
    error_id = raised.value.details().split()[2]
    assert "secret" not in raised.value.details()
    assert any(error_id in record.getMessage() for record in caplog.records)
    logged = [record for record in caplog.records if record.exc_info]
    assert "secret internals" in str(logged[0].exc_info[1])
    assert PROBE_SERVICE in logged[0].getMessage()


def test_a_servicer_abort_keeps_its_own_status(channel):
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(f"/{PROBE_SERVICE}/Raise")(b"abort", timeout=10)

    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert raised.value.details() == "aborted by the servicer"


def test_trace_context_travels_from_client_to_server_in_metadata(running, telemetry, finished_spans):
    tracer = telemetry.tracer(__name__)

    with (
        traced_channel(
            f"127.0.0.1:{running.port}",
            telemetry.tracer_provider,
            credentials=call_credentials(Role.SUPERVISOR),
        ) as channel,
        tracer.start_as_current_span("agent desktop click") as caller,
    ):
        seen_by_server = channel.unary_unary(f"/{PROBE_SERVICE}/CurrentTrace")(b"", timeout=10)

    assert seen_by_server.decode() == format(caller.get_span_context().trace_id, "032x")
    spans = {span.kind: span for span in finished_spans.get_finished_spans()}
    client, server = spans[trace.SpanKind.CLIENT], spans[trace.SpanKind.SERVER]
    assert client.parent.span_id == caller.get_span_context().span_id
    assert server.parent.span_id == client.context.span_id
    assert server.name == f"/{PROBE_SERVICE}/CurrentTrace"


def _probe_server(**options) -> RunningServer:
    return create_server(
        "127.0.0.1:0",
        [ServiceRegistration(add_probe_to_server, Probe(), PROBE_SERVICE)],
        max_workers=4,
        **server_security(PROBE_ACCESS),
        **options,
    )


def test_health_follows_the_process_health_both_ways() -> None:
    health = Health("probe")
    server = _probe_server(health=health)
    try:
        with secure_channel(f"127.0.0.1:{server.port}", Role.SUPERVISOR) as channel:
            assert _check(channel) == _check(channel, PROBE_SERVICE) == health_pb2.HealthCheckResponse.SERVING
            health.trouble("writer", "no broker answers")
            assert (
                _check(channel)
                == _check(channel, PROBE_SERVICE)
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
            health.clear("writer")
            assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)


def test_until_ready_calls_are_refused_as_unavailable_while_health_answers() -> None:
    health, ready = Health("probe"), threading.Event()
    health.trouble("store", "replaying contacts.events.v1")
    server = _probe_server(health=health, ready=ready)
    try:
        with secure_channel(f"127.0.0.1:{server.port}", Role.SUPERVISOR) as channel:
            assert _check(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(f"/{PROBE_SERVICE}/Raise")(b"missing", timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "starting: replaying contacts.events.v1" in raised.value.details()
            ready.set()
            health.clear("store")
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(f"/{PROBE_SERVICE}/Raise")(b"missing", timeout=10)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(None)


def test_a_second_server_on_a_taken_port_is_refused(running):
    with pytest.raises(PortTaken, match=f"127.0.0.1:{running.port} is taken"):
        create_server(
            f"127.0.0.1:{running.port}",
            [ServiceRegistration(add_probe_to_server, Probe(), PROBE_SERVICE)],
            max_workers=2,
            **server_security(PROBE_ACCESS),
        )
