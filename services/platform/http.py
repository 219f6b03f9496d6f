"""The kernel's edge for a service's small FastAPI API: callers checked as gRPC checks them, the kernel's
errors as HTTP statuses, and uvicorn over TLS on a thread of the service process.

A route names the rpcs it stands for; its caller's bearer token is verified by the service's
``TokenVerifier`` and authorised against ``services.platform.access`` for each of them, so a token
gets over HTTP exactly what it gets over gRPC (a route may narrow the roles further). A route acts
for the token's own agent and department, never for one the client names, so an rpc scoped to them
is authorised for the token's own. Refusals and
errors answer ``{"error": "<the error's message>"}``, which names the field, the rpc and its roles, or
the current state: 400 InvalidArgument, 401 Unauthenticated, 403 PermissionDenied, 404 NotFound,
409 FailedPrecondition (and any other refusal), 429 Overloaded and 503 Unavailable (both with
``Retry-After``). A body that breaks its model's constraints is FastAPI's 422, naming the field.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Annotated, Any, TypeVar

import uvicorn
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.platform.access import ACCESS, authorize
from services.platform.envelope import Actor
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
from services.platform.identity import Principal, Role, TokenVerifier
from services.platform.process import ServiceProcess, StartRefused
from services.platform.settings import Settings, TlsSettings

T = TypeVar("T")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RETRY_AFTER_S = "1"

STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (InvalidArgument, status.HTTP_400_BAD_REQUEST),
    (Unauthenticated, status.HTTP_401_UNAUTHORIZED),
    (PermissionDenied, status.HTTP_403_FORBIDDEN),
    (NotFound, status.HTTP_404_NOT_FOUND),
    (FailedPrecondition, status.HTTP_409_CONFLICT),
    (Overloaded, status.HTTP_429_TOO_MANY_REQUESTS),
    (Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
)
# A domain error of no narrower kind refuses the request as it stands, like a failed precondition.
_REFUSED = status.HTTP_409_CONFLICT
_HEADERS_BY_STATUS = {
    status.HTTP_401_UNAUTHORIZED: {"WWW-Authenticate": "Bearer"},
    status.HTTP_429_TOO_MANY_REQUESTS: {"Retry-After": RETRY_AFTER_S},
    status.HTTP_503_SERVICE_UNAVAILABLE: {"Retry-After": RETRY_AFTER_S},
}


def status_of(error: Exception) -> int:
    """The HTTP status a kernel error answers with."""
    return next((code for kind, code in STATUS_BY_ERROR if isinstance(error, kind)), _REFUSED)


def error_response(error: Exception) -> JSONResponse:
    code = status_of(error)
    return JSONResponse(status_code=code, content={"error": str(error)}, headers=_HEADERS_BY_STATUS.get(code))


def create_api(title: str, verifier: TokenVerifier, **fastapi: Any) -> FastAPI:
    """A FastAPI app whose routes may depend on ``caller`` (checked by ``verifier``) and whose kernel
    errors answer as the module says."""
    app = FastAPI(title=title, **fastapi)
    app.state.verifier = verifier

    async def refused(_request: Request, error: Exception) -> JSONResponse:
        return error_response(error)

    for kind in (DomainError, Unauthenticated, Unavailable, Overloaded):
        app.add_exception_handler(kind, refused)
    return app


# A missing token is ours to refuse (401 with our body), not FastAPI's.
BEARER = HTTPBearer(
    auto_error=False,
    description="A bearer token (JWT) for a role the route grants, as for the service's gRPC API: "
    "docs/security.md",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def caller(service: str, *rpcs: str, roles: Iterable[Role] = ()) -> Callable[..., Principal]:
    """A dependency: the principal of a request whose bearer token the app's verifier accepts, for a
    role that each rpc of ``service`` in ``rpcs`` grants (``access.authorize``, in the token's own
    scope) and, when ``roles`` are given, one of those."""
    narrowed = frozenset(roles)

    def authenticated(request: Request, credentials: Credentials) -> Principal:
        if credentials is None:
            raise Unauthenticated("no bearer token: send 'Authorization: Bearer <token>'")
        principal: Principal = request.app.state.verifier.verify(credentials.credentials)
        for rpc in rpcs:
            method = f"/{service}/{rpc}"
            authorize(method, principal, _own_scope(method, principal))
        if narrowed and not narrowed & principal.roles:
            raise PermissionDenied(
                f"{request.method} {request.url.path} needs one of the roles "
                f"{', '.join(sorted(narrowed))}; the token of {principal.describe()}"
            )
        return principal

    return authenticated


def _own_scope(method: str, principal: Principal) -> SimpleNamespace:
    """A request naming the principal's own agent and department in the fields the rpc is scoped by."""
    access = ACCESS.get(method)
    if access is None:
        return SimpleNamespace()
    fields = {access.agent_field: principal.agent_id, access.department_field: principal.department}
    return SimpleNamespace(**{name: value for name, value in fields.items() if name})


def actor_of(principal: Principal) -> Actor:
    """The actor recorded on the events a request causes, as the gRPC write path records it."""
    return Actor(principal.subject, tuple(sorted(principal.roles)))


def serve_with_http(
    settings: Settings,
    name: str,
    serve: Callable[[], ServiceProcess[T]],
    app_for: Callable[[ServiceProcess[T]], FastAPI],
) -> ServiceProcess[T]:
    """``serve()`` the context, then its HTTP API (``app_for`` the process) on ``settings.http.address``.

    The HTTP port is bound first, so a taken one is refused before the replay, not after it; an API
    that does not start stops the process it would have served.
    """
    bound = bind(settings.http.address, name)
    try:
        process = serve()
    except BaseException:
        bound.close()
        raise
    try:
        serve_http(app_for(process), bound, process, settings.tls)
    except BaseException:
        process.close(0)
        raise
    return process


def bind(address: str, name: str) -> socket.socket:
    """A socket bound to ``host:port`` (IPv4 or a bracketed IPv6 host) for ``name``'s HTTP API;
    ``StartRefused`` naming the address when it cannot be."""
    host, _, port = address.rpartition(":")
    bound = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        bound.bind((host.strip("[]"), int(port)))
    except OSError as error:
        bound.close()
        raise StartRefused(
            f"{name}'s HTTP API cannot serve on {address}: {error.strerror}; another {name} may be running "
            f"(see .data/run/{name}-*.lock), or set CC_HTTP__ADDRESS"
        ) from None
    return bound


def serve_http(app: FastAPI, bound: socket.socket, process: ServiceProcess[Any], tls: TlsSettings) -> int:
    """Run uvicorn on a thread of the process, on the socket bound for it, over TLS with the service's
    certificate (unless ``tls.plaintext``), stopped with the process (before its store); sets and
    returns ``process.http_port``."""
    certificate = {} if tls.plaintext else {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **certificate))

    def run() -> None:
        # uvicorn logs why it cannot start and then raises SystemExit; the wait below reports it.
        with contextlib.suppress(SystemExit):
            server.run(sockets=[bound])

    thread = threading.Thread(target=run, name=f"{process.name}-http", daemon=True)
    thread.start()
    waiting, deadline = threading.Event(), time.monotonic() + START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        waiting.wait(0.02)
    if not server.started:
        server.should_exit = True
        bound.close()
        raise StartRefused(f"{process.name}'s HTTP API did not start (see the line above)")

    def stop() -> None:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)

    process.closers.append(stop)
    process.http_port = bound.getsockname()[1]
    return process.http_port
