"""The local CA, the local issuer and its CLI, and verification by an identity provider's JWKS URL."""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.platform.errors import Unauthenticated, Unavailable
from services.platform.identity import Role, TokenIssuer, TokenVerifier, ensure_local, main, operator_token
from services.platform.settings import AuthSettings, Settings, TlsSettings
from services.platform.tls import ensure_local_ca


def test_the_local_ca_signs_a_certificate_for_the_loopback_names_and_keeps_it_across_restarts(
    tmp_path,
) -> None:
    files = ensure_local_ca(tmp_path)
    server = x509.load_pem_x509_certificates(files.server_cert.read_bytes())
    names = server[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server[0].verify_directly_issued_by(ca)
    for key in (files.ca_key, files.server_key, files.broker_client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    first = files.server_cert.read_bytes()

    assert ensure_local_ca(tmp_path).server_cert.read_bytes() == first


def test_a_new_ca_renews_the_certificates_it_signs(tmp_path) -> None:
    files = ensure_local_ca(tmp_path)
    files.ca_cert.unlink()
    ensure_local_ca(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    x509.load_pem_x509_certificates(files.server_cert.read_bytes())[0].verify_directly_issued_by(ca)


@pytest.fixture
def local(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CC_TLS__DIR", str(tmp_path / "tls"))
    monkeypatch.setenv("CC_AUTH__DIR", str(tmp_path / "identity"))
    settings = Settings()
    ensure_local(settings)
    return settings


def test_make_token_prints_a_token_the_services_accept(local: Settings, capsys) -> None:
    main(
        ["token", "--role", "department", "--subject", "dept-water", "--department", "water", "--hours", "1"]
    )
    principal = TokenVerifier(local.auth).verify(capsys.readouterr().out.strip())
    assert (principal.subject, principal.roles, principal.department) == (
        "dept-water",
        frozenset({Role.DEPARTMENT}),
        "water",
    )
    assert stat.S_IMODE(local.auth.signing_key.stat().st_mode) == 0o600


def test_a_tool_in_cluster_mode_needs_a_token_given(local: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert operator_token(local, "given-token", Role.ADMIN, "op") == "given-token"
    monkeypatch.setenv("CC_ENVIRONMENT", "cluster")
    with pytest.raises(Unauthenticated, match="set CC_TOKEN to a token for role admin"):
        operator_token(Settings(), None, Role.ADMIN, "op")


def test_a_service_without_a_verification_key_names_the_settings(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="CC_AUTH__PUBLIC_KEY_FILE or CC_AUTH__JWKS_URL"):
        TokenVerifier(AuthSettings(dir=tmp_path))


@pytest.fixture
def identity_provider() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """An identity provider's JWKS endpoint on loopback, serving one RS256 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/certs", key
    server.shutdown()


def test_tokens_of_an_identity_provider_verify_by_its_jwks_url(identity_provider, tmp_path: Path) -> None:
    url, key = identity_provider
    auth = AuthSettings(
        issuer="https://idp.example.org",
        audience="callcenter",
        algorithms=("RS256",),
        jwks_url=url,
        dir=tmp_path,
    )
    claims = {"iss": auth.issuer, "aud": "callcenter", "sub": "sv-1", "roles": ["supervisor"]}
    issued = jwt.encode(
        {**claims, "iat": int(time.time()), "exp": int(time.time()) + 300},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert TokenVerifier(auth).verify(issued).roles == {Role.SUPERVISOR}
    local_issuer = AuthSettings(dir=tmp_path / "local", issuer=auth.issuer)
    ensure_local(Settings(auth=local_issuer, tls=TlsSettings(dir=tmp_path / "tls")))
    foreign = TokenIssuer(local_issuer).for_role(Role.SUPERVISOR, "sv-1")
    with pytest.raises(Unauthenticated):
        TokenVerifier(auth).verify(foreign)


def test_an_identity_provider_that_is_away_makes_the_check_unavailable_not_the_caller_wrong(tmp_path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    auth = AuthSettings(algorithms=("RS256",), jwks_url=f"http://127.0.0.1:{port}/certs", dir=tmp_path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": auth.issuer, "aud": auth.audience, "sub": "sv-1", "roles": ["supervisor"]}
    issued = jwt.encode(
        {**claims, "iat": int(time.time()), "exp": int(time.time()) + 300},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(Unavailable, match="identity provider's keys cannot be fetched"):
        TokenVerifier(auth).verify(issued)


def test_a_verification_key_of_another_algorithm_is_refused_at_start(tmp_path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "idp.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ValueError, match="not a key of the accepted algorithms EdDSA"):
        TokenVerifier(AuthSettings(public_key_file=public, dir=tmp_path))
    assert TokenVerifier(AuthSettings(public_key_file=public, algorithms=("RS256",), dir=tmp_path))


def test_a_tokens_titles_reach_the_principal_and_a_token_without_them_holds_none(local: Settings) -> None:
    issuer, verifier = TokenIssuer(local.auth), TokenVerifier(local.auth)
    director = verifier.verify(
        issuer.for_role(Role.DEPARTMENT, "fin-7", titles=["director", "approver"], department="finance")
    )
    assert (director.department, director.titles) == ("finance", frozenset({"director", "approver"}))
    assert verifier.verify(issuer.for_role(Role.SUPERVISOR, "sup-1")).titles == frozenset()


def test_a_department_token_acts_for_its_department_and_one_without_the_claim_for_none() -> None:
    from services.platform.errors import PermissionDenied
    from services.platform.identity import Principal, department_acted_for

    assert department_acted_for(Principal("d-1", frozenset({Role.DEPARTMENT}), department="water")) == "water"
    assert department_acted_for(Principal("s-1", frozenset({Role.SUPERVISOR, Role.DEPARTMENT}))) == ""
    with pytest.raises(PermissionDenied, match="has the department role but no department claim"):
        department_acted_for(Principal("d-2", frozenset({Role.DEPARTMENT})))
