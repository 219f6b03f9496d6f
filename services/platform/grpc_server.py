"""gRPC server helpers: build and start a server with health and reflection, map errors to status
codes, and serve until the process is told to stop.

Health follows the process's ``Health``: NOT_SERVING while it rebuilds its state, cannot write or
is stopping. Until the state is rebuilt every call but health and reflection is refused with
UNAVAILABLE. An unexpected error answers INTERNAL with an error id that is also in the log, never a
traceback to the caller. The port is bound exclusively: a second server on a taken port fails.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health as health_module
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.platform.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from services.platform.health import Health
from services.platform.logs import request_id
from services.platform.validation import check

log = logging.getLogger(__name__)

INTERNAL_ERROR_DETAILS = "internal error"
ALWAYS_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")

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
    health: health_module.HealthServicer

    def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING to every health check and watcher, then let in-flight RPCs finish for up
        to ``grace`` seconds before cancelling them; returns once the server has stopped."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


class PortTaken(Exception):
    """The address is in use by another process."""


def create_server(
    address: str,
    services: Sequence[ServiceRegistration],
    *,
    credentials: grpc.ServerCredentials,
    access: grpc.ServerInterceptor,
    max_workers: int,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    max_concurrent_rpcs: int | None = None,
    health: Health | None = None,
    ready: threading.Event | None = None,
) -> RunningServer:
    """Register ``services`` with the health and reflection services, bind ``address`` (port 0 picks a
    free port) and start serving.

    ``credentials`` say how the port is served (``identity.server_credentials``: TLS); ``access``
    authenticates and authorises every call (``access.AccessInterceptor``) before anything else sees
    it but ``interceptors``, which run outermost first (telemetry); the error mapping is always
    innermost, next to the servicers. With ``health``, the health service follows it; with ``ready``,
    other calls are refused (UNAVAILABLE) until it is set. Beyond ``max_concurrent_rpcs`` calls at
    once, gRPC refuses more with RESOURCE_EXHAUSTED.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=(*interceptors, access, ErrorInterceptor(ready, health)),
        # Without this a second server binds the same port silently and takes half the calls.
        options=[("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    health_servicer = health_module.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for registration in services:
        registration.add_to_server(registration.servicer, server)
    service_names = [registration.service_name for registration in services]
    reflection.enable_server_reflection(
        (*service_names, health_module.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise PortTaken(f"{address} is taken")

    def follow(serving: bool, _why: str) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *service_names):
            health_servicer.set(name, status)

    if health is not None:
        health.watch(follow)
    else:
        follow(True, "")
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


def status_for(error: Exception) -> grpc.StatusCode:
    """The status code an error is reported with."""
    if isinstance(error, Unavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    for error_type, code in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


class ErrorInterceptor(grpc.ServerInterceptor):
    """Checks each request against its contract's constraints (``validation.check``: INVALID_ARGUMENT
    naming the field), then turns an error raised by a servicer into its status code with the error's
    message as details: domain errors, UNAVAILABLE and RESOURCE_EXHAUSTED; any other exception into
    INTERNAL with an error id that the log line carrying the traceback also has. Refuses calls until
    ``ready`` is set, and puts each call's request id into the log context."""

    def __init__(self, ready: threading.Event | None = None, health: Health | None = None) -> None:
        self._ready = ready
        self._health = health

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith(ALWAYS_OPEN):
            return handler
        gate = self._gate
        return wrapped_handler(
            handler,
            lambda behavior: _single_response(behavior, method, gate),
            lambda behavior: _streaming_response(behavior, method, gate),
        )

    def _gate(self) -> None:
        if self._ready is not None and not self._ready.is_set():
            why = self._health.why() if self._health is not None else ""
            raise Unavailable(f"the service is starting{': ' + why if why else ''}; try again shortly")


def wrapped_handler(
    handler: grpc.RpcMethodHandler,
    single: Callable[[Callable[..., Any]], Callable[..., Any]],
    streaming: Callable[[Callable[..., Iterator[Any]]], Callable[..., Iterator[Any]]],
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour wrapped: by ``single`` for one response, ``streaming`` for many."""
    if handler.response_streaming:
        if handler.request_streaming:
            factory, behavior = grpc.stream_stream_rpc_method_handler, handler.stream_stream
        else:
            factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
        wrapped = streaming(behavior)
    else:
        if handler.request_streaming:
            factory, behavior = grpc.stream_unary_rpc_method_handler, handler.stream_unary
        else:
            factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
        wrapped = single(behavior)
    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _single_response(
    behavior: Callable[..., Any], method: str, gate: Callable[[], None]
) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        token = request_id.set(getattr(request, "request_id", "") or "")
        try:
            gate()
            if isinstance(request, Message):
                check(request)
            return behavior(request, context)
        except Exception as error:
            _abort_for(error, context, method)
        finally:
            request_id.reset(token)

    return call


def _streaming_response(
    behavior: Callable[..., Iterator[Any]], method: str, gate: Callable[[], None]
) -> Callable[..., Iterator[Any]]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            gate()
            if isinstance(request, Message):
                check(request)
            yield from behavior(request, context)
        except Exception as error:
            _abort_for(error, context, method)

    return call


def _abort_for(error: Exception, context: grpc.ServicerContext, method: str) -> NoReturn:
    # ServicerContext.abort() records the status and then raises a bare Exception: let that one through.
    if type(error) is Exception and context.code() is not None:
        raise error
    if isinstance(error, DomainError | Unavailable | Overloaded | Unauthenticated):
        context.abort(status_for(error), str(error))
    error_id = uuid.uuid4().hex[:12]
    log.exception("internal error %s in %s", error_id, method)
    context.abort(grpc.StatusCode.INTERNAL, f"{INTERNAL_ERROR_DETAILS} {error_id} (in the service's log)")
