"""gRPC server helpers: build and start a server with health and reflection, map domain errors to
status codes, and serve until the process is told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.platform.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

log = logging.getLogger(__name__)

INTERNAL_ERROR_DETAILS = "internal error"

_STATUS_BY_ERROR: tuple[tuple[type[DomainError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)


class ServiceRegistration(NamedTuple):
    """One servicer to serve: the generated ``add_XServicer_to_server``, the servicer, and the full
    service name (``DESCRIPTOR.services_by_name[...].full_name``) for health and reflection."""

    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: object
    service_name: str


@dataclass
class RunningServer:
    """A started server, the port it bound, and its health service."""

    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING to every health check and watcher, then let in-flight RPCs finish for up
        to ``grace`` seconds before cancelling them; returns once the server has stopped."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def create_server(
    address: str,
    services: Sequence[ServiceRegistration],
    *,
    max_workers: int,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> RunningServer:
    """Register ``services`` with the health and reflection services, bind ``address`` (port 0 picks a
    free port) and start serving.

    ``interceptors`` run outermost first (telemetry, then authentication); the domain-error mapping is
    always innermost, next to the servicers.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=(*interceptors, DomainErrorInterceptor()),
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for registration in services:
        registration.add_to_server(registration.servicer, server)
    service_names = [registration.service_name for registration in services]
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"gRPC server could not bind {address}")
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    server.start()
    return RunningServer(server=server, port=port, health=health_servicer)


def stop_on_signals(signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> threading.Event:
    """Install handlers (main thread only) that set the returned event on any of ``signals``.

    A composition root calls this before it starts anything, so a signal that arrives during start-up
    still ends in a graceful stop.
    """
    stop = threading.Event()
    for signum in signals:
        signal.signal(signum, lambda received, _frame: _request_stop(stop, received))
    return stop


def _request_stop(stop: threading.Event, signum: int) -> None:
    log.info("received %s, stopping", signal.Signals(signum).name)
    stop.set()


def serve(server: RunningServer, grace_s: float, *, stop: threading.Event | None = None) -> None:
    """Block until SIGTERM or SIGINT (or until ``stop`` is set, when given), then stop gracefully."""
    if stop is None:
        stop = stop_on_signals()
    stop.wait()
    server.stop(grace_s)


def status_for(error: DomainError) -> grpc.StatusCode:
    """The status code a domain error is reported with."""
    for error_type, code in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


class DomainErrorInterceptor(grpc.ServerInterceptor):
    """Turns a domain error raised by a servicer into its status code with the error's message as
    details, and any other exception into INTERNAL with a generic message (traceback logged)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.response_streaming:
            behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            wrapped: Callable[..., Any] = _streaming_response(behavior, method)
        else:
            behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
            factory = (
                grpc.stream_unary_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            wrapped = _single_response(behavior, method)
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _single_response(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as error:
            _abort_for(error, context, method)

    return call


def _streaming_response(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception as error:
            _abort_for(error, context, method)

    return call


def _abort_for(error: Exception, context: grpc.ServicerContext, method: str) -> NoReturn:
    # ServicerContext.abort() records the status and then raises a bare Exception: let that one through.
    if type(error) is Exception and context.code() is not None:
        raise error
    if isinstance(error, DomainError):
        context.abort(status_for(error), str(error))
    log.exception("unexpected error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_DETAILS)
