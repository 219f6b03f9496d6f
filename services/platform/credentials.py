"""The local Kafka passwords: one random SCRAM password per principal, created once, owner-only.

They live under the identity dir (``BrokerSettings.credentials_dir``, by default
``.data/identity/kafka/<principal>.password``). The broker's admin password is created before its
storage is formatted (``services.platform.broker``), every other principal's when its SCRAM user is
created (``services.platform.acls``); clients read theirs through ``KafkaSettings.sasl_password_file``.
A cluster brings its own passwords through settings and never creates any here.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from services.platform.tls import write_private

# 256 bits, URL-safe: no character that the broker's JAAS line or --add-scram would have to quote.
PASSWORD_BYTES = 32


def read_password(path: Path) -> str | None:
    """The password in ``path``, or None when there is no such file (or it is empty)."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_password(path: Path) -> tuple[str, bool]:
    """The password in ``path``, creating a random one (owner-only) when there is none; True if created."""
    existing = read_password(path)
    if existing is not None:
        return existing, False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    write_private(path, password.encode())
    return password, True
