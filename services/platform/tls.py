"""The local certificate authority: a CA and the certificates that gRPC and the Kafka broker serve.

``python -m services.platform.tls ensure`` (``make run`` and the test session call the same function)
creates, under one directory, a CA and a server certificate naming 127.0.0.1 and localhost (librdkafka
and gRPC check the host name), plus the broker's certificate for its own controller listener (mutual
TLS on loopback: the listener serves it and the broker presents it, so it names the loopback host
and is for both server and client authentication, which Java checks). Files that exist and are
valid for another month are kept, so a restart trusts what it trusted before; private keys are
written readable by their owner only. A cluster brings its own certificates through settings and
never runs this.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.platform.settings import Settings

CA_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=397)
RENEW_BEFORE = timedelta(days=30)
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1",)
# The subject of the certificate the broker presents to its controller listener (and that listener
# serves); the broker's configuration maps it to its admin principal there alone.
BROKER_CLIENT_NAME = "kafka-broker"


@dataclass(frozen=True)
class LocalCertificates:
    """Where the local CA's files are: PEM, keys as unencrypted PKCS#8."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def broker_client_cert(self) -> Path:
        return self.directory / "broker-client.pem"

    @property
    def broker_client_key(self) -> Path:
        return self.directory / "broker-client.key"


def ensure_local_ca(directory: Path) -> LocalCertificates:
    """The CA, the server certificate and the broker's client certificate under ``directory``, each
    created or renewed when missing, expiring within ``RENEW_BEFORE`` or (leaves) no longer signed by
    the CA."""
    files = LocalCertificates(directory.resolve())
    files.directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert, renewed = _ensure_ca(files)
    _ensure_leaf(
        files.server_cert,
        files.server_key,
        ca_key,
        ca_cert,
        common_name="localhost",
        server=True,
        client=False,
        force=renewed,
    )
    _ensure_leaf(
        files.broker_client_cert,
        files.broker_client_key,
        ca_key,
        ca_cert,
        common_name=BROKER_CLIENT_NAME,
        server=True,
        client=True,
        force=renewed,
    )
    return files


def _ensure_ca(files: LocalCertificates) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    existing = _load(files.ca_cert, files.ca_key)
    if existing is not None and _fresh(existing[1]):
        return existing[0], existing[1], False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callcenter local CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.ca_key, files.ca_cert, key, [cert])
    return key, cert, True


def _ensure_leaf(
    cert_path: Path,
    key_path: Path,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    server: bool,
    client: bool,
    force: bool,
) -> None:
    usages = [
        usage
        for usage, wanted in (
            (ExtendedKeyUsageOID.SERVER_AUTH, server),
            (ExtendedKeyUsageOID.CLIENT_AUTH, client),
        )
        if wanted
    ]
    existing = _load(cert_path, key_path)
    if (
        not force
        and existing is not None
        and _fresh(existing[1])
        and existing[1].issuer == ca_cert.subject
        and existing[1].public_key() == existing[0].public_key()
        and _usages(existing[1]) == set(usages)
    ):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(name) for name in LOCAL_NAMES),
                    *(x509.IPAddress(ipaddress.ip_address(address)) for address in LOCAL_ADDRESSES),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, cert_path, key, [cert, ca_cert])


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE


def _load(cert_path: Path, key_path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    if not cert_path.exists() or not key_path.exists():
        return None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    except ValueError:
        return None
    return (key, cert) if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _write(
    key_path: Path, cert_path: Path, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]
) -> None:
    # The key first, owner-only from its creation: no moment where another user could read it.
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, key_bytes)
    cert_path.write_bytes(b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain))


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (replacing the file in one step)."""
    temporary = path.with_name(f".{path.name}.tmp")
    # A new file, never a leftover one (which would keep its own mode) nor a link to elsewhere.
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["ensure"])
    parser.parse_args(argv)
    files = ensure_local_ca(Settings().tls.dir)
    print(f"local CA and certificates in {files.directory} (trust {files.ca_cert})")


if __name__ == "__main__":
    main()
