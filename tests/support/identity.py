"""Real credentials for tests: the local CA and token issuer of the test session (conftest points
CC_TLS__DIR and CC_AUTH__DIR at a temporary directory), tokens per role, and TLS channels that carry
them. Servers in tests are served exactly as services are: TLS, and the access interceptor."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import grpc

from services.platform.access import ACCESS, Access, AccessInterceptor
from services.platform.identity import (
    Role,
    TokenIssuer,
    TokenVerifier,
    channel,
    channel_credentials,
    ensure_local,
    server_credentials,
    transport_credentials,
)
from services.platform.settings import Settings


@functools.cache
def _settings() -> Settings:
    settings = Settings()
    ensure_local(settings)
    return settings


@functools.cache
def _issuer() -> TokenIssuer:
    return TokenIssuer(_settings().auth)


def token(role: Role | str, subject: str = "", **scopes: str) -> str:
    """A token of the session's issuer for one role (an agent's names its own agent id)."""
    return _issuer().for_role(role, subject, **scopes)


def secure_channel(address: str, role: Role | str, subject: str = "", **scopes: str) -> grpc.Channel:
    """A TLS channel to ``address`` whose calls carry a token for ``role``."""
    return channel(address, _settings().tls, token(role, subject, **scopes))


def channel_with_token(address: str, bearer: str) -> grpc.Channel:
    """A TLS channel whose calls carry ``bearer`` as it is (tests of refusals)."""
    return channel(address, _settings().tls, bearer)


def anonymous_channel(address: str) -> grpc.Channel:
    """A TLS channel that sends no token."""
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(_settings().tls.ca.read_bytes()))


def server_security(table: Mapping[str, Access] = ACCESS) -> dict[str, Any]:
    """``create_server``'s credentials and access interceptor, as ``serve_context`` builds them."""
    settings = _settings()
    return {
        "credentials": server_credentials(settings.tls),
        "access": AccessInterceptor(TokenVerifier(settings.auth), table),
    }


def call_credentials(role: Role | str, subject: str = "", **scopes: str) -> grpc.ChannelCredentials:
    """TLS with a token for ``role`` on every call, for channels a test builds itself."""
    return channel_credentials(_settings().tls, token(role, subject, **scopes))


# Whom a call is made by when the rpc leaves a choice: the first role of this order that it grants.
_CALLER_ORDER = (
    Role.TELEPHONY,
    Role.SUPERVISOR,
    Role.ADMIN,
    Role.KPI_READER,
    Role.DEPARTMENT,
    Role.SERVICE,
    Role.AGENT,
)


def caller_token(method: str, request: Any) -> str:
    """The token of whoever would make this call: the agent a request names for an agent's own rpc
    (a desktop), the department it names for a department's, else the first role the rpc grants."""
    access = ACCESS[method]
    agent_id = getattr(request, access.agent_field, "") if access.agent_field else ""
    if Role.AGENT in access.roles and agent_id:
        return _cached_token(Role.AGENT, agent_id, "")
    department = getattr(request, access.department_field, "") if access.department_field else ""
    if Role.DEPARTMENT in access.roles and department:
        return _cached_token(Role.DEPARTMENT, f"dept-{department}", department)
    role = next(role for role in _CALLER_ORDER if role in access.roles)
    return _cached_token(role, "", "")


@functools.lru_cache(maxsize=4096)
def _cached_token(role: Role, subject: str, department: str) -> str:
    return token(role, subject, **({"department": department} if department else {}))


class CallerChannel:
    """A TLS channel each of whose calls carries the token of the caller who would make it
    (``caller_token``): one simulated center of telephony adapters, desktops and supervisors behind
    one connection. Generated stubs take it as a channel."""

    def __init__(self, address: str, choose: Any = caller_token) -> None:
        self._channel = grpc.secure_channel(address, transport_credentials(_settings().tls))
        self._choose = choose

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _Authenticated:
        return _Authenticated(self._channel.unary_unary(method, *args, **kwargs), method, self._choose)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Authenticated:
        return _Authenticated(self._channel.unary_stream(method, *args, **kwargs), method, self._choose)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CallerChannel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Authenticated:
    def __init__(self, multicallable: Any, method: str, choose: Any) -> None:
        self._call = multicallable
        self._method = method
        self._choose = choose

    def _metadata(self, request: Any, metadata: Any) -> list[tuple[str, str]]:
        return [*(metadata or ()), ("authorization", f"Bearer {self._choose(self._method, request)}")]

    def __call__(self, request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call(request, *args, metadata=self._metadata(request, metadata), **kwargs)

    def with_call(self, request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call.with_call(request, *args, metadata=self._metadata(request, metadata), **kwargs)

    def future(self, request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call.future(request, *args, metadata=self._metadata(request, metadata), **kwargs)
