"""Who calls: bearer tokens (JWT) checked into a ``Principal``, the local issuer, and client credentials.

A token names its subject, its roles and, where they apply, the agent, the department or the
telephony adapter it speaks for. Services verify tokens with the issuer's public key (a file, or the
issuer's JWKS URL in a cluster): issuer, audience and expiry checked, algorithms pinned to the
asymmetric ones in settings. Locally ``python -m services.platform.identity ensure`` (``make run``)
creates a signing key pair, and ``python -m services.platform.identity token`` (``make token``)
issues tokens with it. Clients send a token per call, over TLS (``channel``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from services.platform.errors import PermissionDenied, Unauthenticated, Unavailable
from services.platform.settings import AuthSettings, Settings, TlsSettings
from services.platform.tls import ensure_local_ca, write_private

ROLES_CLAIM = "roles"
AGENT_CLAIM = "agent_id"
DEPARTMENT_CLAIM = "department"
ADAPTER_CLAIM = "adapter_id"
# The positions the subject holds in its department or at the center (team_lead, director, ...): what
# an approval step's decider may ask for besides the department.
TITLES_CLAIM = "titles"
_REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", ROLES_CLAIM)
_CACHE_SIZE = 4096
# A verified token is checked again after this long, so a key its issuer withdrew stops working soon.
_CACHE_TTL_S = 300.0


class Role(StrEnum):
    """What a caller may do; the RPCs each role may call are in ``services.platform.access``."""

    TELEPHONY = "telephony"  # a telephony or channel adapter: reports contacts
    AGENT = "agent"  # one agent, acting on itself only
    SUPERVISOR = "supervisor"  # forces states, re-skills, watches queues
    ADMIN = "admin"  # configures queues, policies and calendars; operates the services
    DEPARTMENT = "department"  # another department: its own work only
    KPI_READER = "kpi_reader"  # wallboards and reports
    SERVICE = "service"  # another service of the platform


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as its token describes it."""

    subject: str
    roles: frozenset[Role]
    agent_id: str = ""
    department: str = ""
    adapter_id: str = ""
    titles: frozenset[str] = frozenset()
    expires: float = field(default=0.0, compare=False)
    verified_at: float = field(default=0.0, compare=False)

    def describe(self) -> str:
        return f"{self.subject} (roles: {', '.join(sorted(self.roles)) or 'none'})"


# The roles of the contact center's own people and services: a caller holding one acts for the center.
CENTER_ROLES = frozenset({Role.AGENT, Role.SUPERVISOR, Role.ADMIN, Role.SERVICE})


def department_acted_for(principal: Principal) -> str:
    """The department a caller acts for: its ``department`` claim when it holds the department role and
    no role of the center; "" for the center's own people. A department's token without the claim
    acts for nobody: refused (PERMISSION_DENIED), never taken for the center's."""
    if Role.DEPARTMENT not in principal.roles or principal.roles & CENTER_ROLES:
        return ""
    if not principal.department:
        raise PermissionDenied(
            f"{principal.subject}'s token has the department role but no department claim: it acts for none"
        )
    return principal.department


# The caller of the request being served on this thread, set by the access interceptor; the write
# path records it on the events the request causes.
current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def principal_of(claims: dict[str, Any]) -> Principal:
    """The principal a verified token's claims describe. Roles of other systems that the identity
    provider puts beside ours (offline_access, default-roles-...) are not ours and grant nothing."""
    roles = claims.get(ROLES_CLAIM)
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthenticated("the token's roles claim must be a list of role names")
    known = {role.value for role in Role}
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise Unauthenticated("the token has no subject (sub)")
    scopes = {name: claims.get(name, "") for name in (AGENT_CLAIM, DEPARTMENT_CLAIM, ADAPTER_CLAIM)}
    if not all(isinstance(value, str) for value in scopes.values()):
        raise Unauthenticated("the token's agent_id, department and adapter_id claims must be strings")
    titles = claims.get(TITLES_CLAIM, [])
    if not isinstance(titles, list) or not all(isinstance(title, str) for title in titles):
        raise Unauthenticated("the token's titles claim must be a list of position names")
    return Principal(
        subject=subject,
        roles=frozenset(Role(role) for role in roles if role in known),
        agent_id=scopes[AGENT_CLAIM],
        department=scopes[DEPARTMENT_CLAIM],
        adapter_id=scopes[ADAPTER_CLAIM],
        titles=frozenset(titles),
        expires=float(claims["exp"]),
    )


class TokenVerifier:
    """Checks bearer tokens: signature by the configured key, algorithm, issuer, audience, expiry.

    A token already verified is answered from a bounded cache until it expires, so a desk's calls do
    not pay for the signature check each time.
    """

    def __init__(self, auth: AuthSettings) -> None:
        self._auth = auth
        self._jwks = jwt.PyJWKClient(auth.jwks_url, cache_keys=True) if auth.jwks_url else None
        self._key: Any = None
        if self._jwks is None:
            path = auth.public_key
            if not path.exists():
                raise FileNotFoundError(
                    f"the token verification key {path} does not exist; set CC_AUTH__PUBLIC_KEY_FILE or "
                    f"CC_AUTH__JWKS_URL (locally `make run` creates it)"
                )
            self._key = serialization.load_pem_public_key(path.read_bytes())
            _check_key_fits(self._key, auth.algorithms, path)
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``Unauthenticated`` naming what is wrong otherwise."""
        with self._lock:
            cached = self._cache.get(token)
            now = time.time()
            if (
                cached is not None
                and cached.expires > now - self._auth.leeway_s
                and cached.verified_at > now - _CACHE_TTL_S
            ):
                self._cache.move_to_end(token)
                return cached
        principal = replace(principal_of(self._claims(token)), verified_at=time.time())
        with self._lock:
            self._cache[token] = principal
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return principal

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
            return jwt.decode(
                token,
                key,
                algorithms=list(self._auth.algorithms),
                audience=self._auth.audience,
                issuer=self._auth.issuer,
                leeway=self._auth.leeway_s,
                options={"require": list(_REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired; get a new one") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (its iat or nbf is in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"the token is not for this audience ({self._auth.audience})") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"the token was not issued by {self._auth.issuer}") from None
        except jwt.InvalidAlgorithmError:
            allowed = ", ".join(self._auth.algorithms)
            raise Unauthenticated(f"the token's algorithm is not accepted (only {allowed})") from None
        except jwt.MissingRequiredClaimError as missing:
            raise Unauthenticated(f"the token lacks the {missing.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.PyJWKClientConnectionError:
            # The identity provider is away: not the caller's fault, and a retry may pass.
            raise Unavailable(
                "the identity provider's keys cannot be fetched now; try again shortly"
            ) from None
        except (jwt.PyJWTError, ValueError) as error:
            raise Unauthenticated(f"the token is not a valid JWT ({type(error).__name__})") from None


_ALGORITHM_KEYS: dict[str, type] = {
    "EdDSA": ed25519.Ed25519PublicKey,
    "ES256": ec.EllipticCurvePublicKey,
    "ES384": ec.EllipticCurvePublicKey,
    "RS256": rsa.RSAPublicKey,
    "PS256": rsa.RSAPublicKey,
}


def _check_key_fits(key: Any, algorithms: tuple[str, ...], path: Any) -> None:
    """Refuse at start a key that none of the accepted algorithms uses (else every call would fail)."""
    if not any(isinstance(key, _ALGORITHM_KEYS[algorithm]) for algorithm in algorithms):
        raise ValueError(
            f"the token verification key {path} is not a key of the accepted algorithms "
            f"{', '.join(algorithms)}; set CC_AUTH__ALGORITHMS to match it"
        )


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer <token>`` header; ``Unauthenticated`` without one."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the authorization header must be 'Bearer <token>'")
            return token.strip()
    raise Unauthenticated("no bearer token: send 'authorization: Bearer <token>' (make token issues one)")


def ensure_local_signing_key(auth: AuthSettings) -> bool:
    """Create the local issuer's key pair (Ed25519) unless it exists; True if created."""
    if auth.signing_key.exists() and auth.public_key.exists():
        return False
    auth.signing_key.parent.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private(
        auth.signing_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    auth.public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return True


class TokenIssuer:
    """Signs tokens with the local issuer's private key (development, tests, the simulator)."""

    def __init__(self, auth: AuthSettings) -> None:
        self._auth = auth
        self._key = serialization.load_pem_private_key(auth.signing_key.read_bytes(), password=None)

    def issue(
        self,
        subject: str,
        roles: Iterable[Role | str],
        *,
        agent_id: str = "",
        department: str = "",
        adapter_id: str = "",
        titles: Iterable[str] = (),
        lifetime: timedelta | None = None,
    ) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": self._auth.issuer,
            "aud": self._auth.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + (lifetime or self._auth.default_lifetime),
            ROLES_CLAIM: sorted(str(Role(role)) for role in roles),
        }
        for name, value in (
            (AGENT_CLAIM, agent_id),
            (DEPARTMENT_CLAIM, department),
            (ADAPTER_CLAIM, adapter_id),
        ):
            if value:
                claims[name] = value
        if titles:
            claims[TITLES_CLAIM] = sorted(titles)
        return jwt.encode(claims, self._key, algorithm=self._auth.algorithms[0])

    def for_role(self, role: Role | str, subject: str = "", titles: Iterable[str] = (), **scopes: str) -> str:
        """A token for one role; an agent's names its agent id (the subject unless given)."""
        role = Role(role)
        subject = subject or f"local-{role}"
        if role is Role.AGENT:
            scopes.setdefault("agent_id", subject)
        return self.issue(subject, [role], titles=titles, **scopes)


def transport_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """TLS trusting the configured CA; with ``tls.plaintext``, gRPC's local (loopback, unencrypted)
    credentials. Enough for health checks; every other call needs a token as well."""
    if tls.plaintext:
        return grpc.local_channel_credentials()
    return grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())


def channel_credentials(tls: TlsSettings, token: str) -> grpc.ChannelCredentials:
    """The transport of ``transport_credentials`` with ``token`` sent on every call."""
    return grpc.composite_channel_credentials(
        transport_credentials(tls), grpc.access_token_call_credentials(token)
    )


def channel(address: str, tls: TlsSettings, token: str, **options: Any) -> grpc.Channel:
    """A client channel to one of our services, authenticated as ``token``'s principal."""
    return grpc.secure_channel(address, channel_credentials(tls, token), options=list(options.items()))


def operator_token(settings: Settings, given: str | None, role: Role, subject: str) -> str:
    """The token a command-line tool calls with: ``given`` (CC_TOKEN), else, in local mode only, one
    for ``role`` from the local issuer."""
    if given:
        return given
    if settings.environment == "cluster":
        raise Unauthenticated(f"set CC_TOKEN to a token for role {role} from the identity provider")
    ensure_local(settings)
    return TokenIssuer(settings.auth).for_role(role, subject)


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """What a service serves gRPC with: its certificate, or, with ``tls.plaintext``, loopback only."""
    if tls.plaintext:
        return grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    for path in (tls.cert, tls.key):
        if not path.exists():
            raise FileNotFoundError(
                f"the TLS file {path} does not exist; set CC_TLS__CERT_FILE and CC_TLS__KEY_FILE "
                f"(locally `make run` creates them under {tls.dir})"
            )
    return grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())])


def ensure_local(settings: Settings) -> None:
    """What local mode needs: the CA and its certificates, and the token signing key."""
    ensure_local_ca(settings.tls.dir)
    ensure_local_signing_key(settings.auth)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local identity: keys and tokens (development only).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure", help="create the local CA, certificates and token signing key if missing")
    token = commands.add_parser("token", help="print a token signed by the local issuer")
    token.add_argument("--role", required=True, action="append", choices=[role.value for role in Role])
    token.add_argument("--subject", default="", help="who the token is for (an agent's id for role agent)")
    token.add_argument("--agent-id", default="")
    token.add_argument("--department", default="")
    token.add_argument("--adapter-id", default="")
    token.add_argument("--title", action="append", default=[], help="a position held (team_lead, director)")
    token.add_argument("--hours", type=float, default=None, help="lifetime (default from settings)")
    args = parser.parse_args(argv)
    settings = Settings()
    if settings.environment == "cluster":
        sys.exit("tokens are issued by the cluster's identity provider; this issuer is for local mode only")
    ensure_local(settings)
    if args.command == "ensure":
        print(f"local CA in {settings.tls.dir}, token signing key in {settings.auth.dir}")
        return
    roles = [Role(role) for role in args.role]
    subject = args.subject or f"local-{roles[0]}"
    agent_id = args.agent_id or (subject if Role.AGENT in roles else "")
    lifetime = timedelta(hours=args.hours) if args.hours is not None else None
    print(
        TokenIssuer(settings.auth).issue(
            subject,
            roles,
            agent_id=agent_id,
            department=args.department,
            adapter_id=args.adapter_id,
            titles=args.title,
            lifetime=lifetime,
        )
    )


if __name__ == "__main__":
    main()
