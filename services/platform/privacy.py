"""Pseudonymisation of customer identifiers: a keyed HMAC to join on, a masked form to show.

A caller number, e-mail address or customer number is never stored or published in clear; the
HMAC lets KPIs and repeat-contact detection join on the same customer without knowing who it is.
"""

from __future__ import annotations

import hashlib
import hmac

from callcenter.common.v1 import types_pb2

from services.platform.settings import PrivacySettings


def normalise(identifier: str) -> str:
    """The canonical form hashed: a phone number keeps its digits (and a leading +), an address is
    lower-cased, so the same customer always hashes alike however telephony formatted it."""
    text = identifier.strip()
    if "@" in text:
        return text.lower()
    digits = "".join(ch for ch in text if ch.isdigit())
    return ("+" + digits) if text.startswith("+") and digits else digits or text.lower()


def mask(identifier: str, visible: int) -> str:
    """``*******1234`` for a number; ``j***@***.org`` for an address (the domain may name a person)."""
    text = normalise(identifier)
    if "@" in text:
        local, _, domain = text.partition("@")
        tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
        return f"{local[:1]}***@***" + (f".{tld}" if tld else "")
    shown = text[-visible:] if 0 < visible < len(text) else ""
    return "*" * (len(text) - len(shown)) + shown


def pseudonymise(identifier: str, privacy: PrivacySettings) -> types_pb2.PartyReference:
    """The party reference of an identifier: empty when there is none (an anonymous caller)."""
    if not identifier.strip():
        return types_pb2.PartyReference()
    digest = hmac.new(
        privacy.hmac_key.get_secret_value().encode(), normalise(identifier).encode(), hashlib.sha256
    ).hexdigest()
    return types_pb2.PartyReference(hash=digest, masked=mask(identifier, privacy.masked_digits))
