"""Many callers behind one connection, as a simulated center needs: telephony adapters, each agent's
desktop, supervisors. Each call carries a token of the local issuer (``make token``'s) for whoever
would make it, so the services check every call as they would in production."""

from __future__ import annotations

import functools
from typing import Any

import grpc

from services.platform.access import ACCESS
from services.platform.identity import Role, TokenIssuer, ensure_local, transport_credentials
from services.platform.settings import Settings


@functools.cache
def local_settings() -> Settings:
    """This process's settings, with the local CA and token signing key they name created if missing."""
    settings = Settings()
    ensure_local(settings)
    return settings


@functools.cache
def local_issuer() -> TokenIssuer:
    return TokenIssuer(local_settings().auth)


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


def department_caller(code: str) -> Any:
    """A chooser for ``CallerChannel`` whose every call is made by one department (its own token)."""

    def choose(_method: str, _request: Any) -> str:
        return _cached_token(Role.DEPARTMENT, f"dept-{code}", code)

    return choose


def member_caller(role: Role, subject: str, titles: tuple[str, ...] = (), department: str = "") -> Any:
    """A chooser for ``CallerChannel`` whose every call is made by one person holding ``titles`` (a
    team lead: an agent's token with titles ["team_lead"])."""
    scopes = {"department": department} if department else {}
    bearer = local_issuer().for_role(role, subject, titles=titles, **scopes)

    def choose(_method: str, _request: Any) -> str:
        return bearer

    return choose


@functools.lru_cache(maxsize=4096)
def _cached_token(role: Role, subject: str, department: str) -> str:
    return local_issuer().for_role(role, subject, **({"department": department} if department else {}))


class CallerChannel:
    """A TLS channel each of whose calls carries the token of the caller who would make it
    (``caller_token``): one simulated center of telephony adapters, desktops and supervisors behind
    one connection. Generated stubs take it as a channel."""

    def __init__(self, address: str, choose: Any = caller_token) -> None:
        self._channel = grpc.secure_channel(address, transport_credentials(local_settings().tls))
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
