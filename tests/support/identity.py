"""Real credentials for tests: the local CA and token issuer of the test session (conftest points
CC_TLS__DIR and CC_AUTH__DIR at a temporary directory), tokens per role, and TLS channels that carry
them. Servers in tests are served exactly as services are: TLS, and the access interceptor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from simulator.callers import CallerChannel, caller_token, local_issuer, local_settings  # noqa: F401

from services.platform.access import ACCESS, Access, AccessInterceptor
from services.platform.identity import (
    Role,
    TokenVerifier,
    channel,
    channel_credentials,
    server_credentials,
)


def token(role: Role | str, subject: str = "", **scopes: Any) -> str:
    """A token of the session's issuer for one role (an agent's names its own agent id)."""
    return local_issuer().for_role(role, subject, **scopes)


def secure_channel(address: str, role: Role | str, subject: str = "", **scopes: Any) -> grpc.Channel:
    """A TLS channel to ``address`` whose calls carry a token for ``role``."""
    return channel(address, local_settings().tls, token(role, subject, **scopes))


def channel_with_token(address: str, bearer: str) -> grpc.Channel:
    """A TLS channel whose calls carry ``bearer`` as it is (tests of refusals)."""
    return channel(address, local_settings().tls, bearer)


def anonymous_channel(address: str) -> grpc.Channel:
    """A TLS channel that sends no token."""
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(local_settings().tls.ca.read_bytes()))


def server_security(table: Mapping[str, Access] = ACCESS) -> dict[str, Any]:
    """``create_server``'s credentials and access interceptor, as ``serve_context`` builds them."""
    settings = local_settings()
    return {
        "credentials": server_credentials(settings.tls),
        "access": AccessInterceptor(TokenVerifier(settings.auth), table),
    }


def call_credentials(role: Role | str, subject: str = "", **scopes: str) -> grpc.ChannelCredentials:
    """TLS with a token for ``role`` on every call, for channels a test builds itself."""
    return channel_credentials(local_settings().tls, token(role, subject, **scopes))
