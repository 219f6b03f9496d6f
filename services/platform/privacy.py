"""Pseudonymisation of customer identifiers: a keyed HMAC to join on, a masked form to show.

A caller number or e-mail address is never stored or published in clear; the HMAC lets KPIs and
repeat-contact detection join on the same customer without knowing who it is. So that one customer
always hashes alike however telephony wrote the number, a number is hashed in its E.164 form:
``+86 139-1234-5678``, ``008613912345678``, ``tel:+8613912345678`` and ``13912345678`` (read in the
default region, CN) are one caller.

What is read, and how:

- A withheld number (the caller restricted it, or the network could not deliver it) in any form
  telephony sends for one (``WITHHELD_WORDS``, a SIP or tel URI with such a user or an ``.invalid``
  host, only zeros, a withheld word spelt on a keypad) is the anonymous caller: no reference at all,
  the same as an empty number, so anonymous callers never join one another as a repeat caller.
- An e-mail address (it has an ``@`` and is not a SIP URI, so ``12345678@qq.com`` stays an address)
  is lower-cased.
- Anything else is a phone number, as a SIP or tel URI or bare: digits, one leading ``+`` and
  visual separators only (letters are refused, not read as a vanity number), read by ``phonenumbers``
  in the default region, whose international prefix (00 in CN) and national prefix it understands.
  A number it reads is kept in its E.164 form even when its metadata does not call it valid: a
  range newer than the metadata, a short service number (12345, 95588), an extension of the
  center's own PBX or an SMS sender id are real callers, and refusing them would lose the contact.
  A text it cannot read (no digits, an unknown country code, a single digit) is refused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import unquote

import phonenumbers
from callcenter.common.v1 import types_pb2

from services.platform.settings import PrivacySettings

# What telephony writes for a withheld or unavailable number, compared lower-case without spaces,
# quotes, brackets, dots, '-' or '_': SIP's anonymous user (RFC 3323, 3GPP TS 24.607), the words PBXs,
# CTI middleware and carriers put in the calling number ("Restricted", "Unavailable", "<unknown>"),
# and the one-letter reasons of analogue caller ID (ETSI/Bellcore CLIP: "P" private, "O" out of area).
WITHHELD_WORDS = frozenset(
    {
        "",
        "anonymous",
        "anonymouscaller",
        "restricted",
        "restrictednumber",
        "presentationrestricted",
        "clir",
        "withheld",
        "numberwithheld",
        "callerwithheld",
        "private",
        "privatenumber",
        "privatecaller",
        "unknown",
        "unknownnumber",
        "unknowncaller",
        "unavailable",
        "numberunavailable",
        "notavailable",
        "blocked",
        "nocallerid",
        "outofarea",
        "p",
        "o",
    }
)
# A withheld word spelt on the keypad, as Twilio passed a withheld caller on to a forwarded leg until
# 2022: ANONYMOUS, RESTRICTED, UNKNOWN, BLOCKED, UNAVAILABLE. None is a valid number (a unit test
# checks it against phonenumbers' metadata).
KEYPAD_WORDS = frozenset({"+266696687", "+7378742833", "+8656696", "+2562533", "+86282452253"})

_IGNORED_IN_WORDS = re.compile(r"""[\s"'<>()\[\]._-]""")
# A SIP name-addr (RFC 3261): an optional display name, the URI in angle brackets, header parameters.
_NAME_ADDR = re.compile(r'^(?:"(?:[^"\\]|\\.)*"\s*|[^<"]*)<([^>]*)>\s*(?:;.*)?$', re.DOTALL)
_URI = re.compile(r"^(sips?|tel):(.*)$", re.IGNORECASE | re.DOTALL)
# Spaces, dashes, dots, slashes and brackets, in their ASCII and full-width forms.
_SEPARATORS = frozenset(
    " \t\u00a0\u3000-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\uff0d.\uff0e()\uff08\uff09[]/\uff0f"
)
_PLUS = frozenset("+\uff0b")


class Kind(enum.Enum):
    """What an identifier is: a withheld number (no caller known), an e-mail address, a phone number."""

    WITHHELD = "withheld"
    EMAIL = "email"
    PHONE = "phone"


@dataclass(frozen=True)
class Identifier:
    """A customer identifier as read: its kind and the canonical form hashed ("" when withheld)."""

    kind: Kind
    canonical: str = ""


WITHHELD = Identifier(Kind.WITHHELD)


class UnreadableIdentifier(ValueError):
    """Neither a withheld number, an e-mail address nor a phone number; the message says why, without
    repeating the text (it may be a number written wrongly)."""


def read(identifier: str, default_region: str) -> Identifier:
    """The identifier's kind and canonical form; raises ``UnreadableIdentifier`` for anything else."""
    text = identifier.strip()
    if _withheld_word(text):
        return WITHHELD
    name_addr = _NAME_ADDR.match(text)
    if name_addr:
        text = name_addr.group(1).strip()
        if _withheld_word(text):
            return WITHHELD
    uri = _URI.match(text)
    if uri:
        return _read_uri(uri.group(1).lower(), uri.group(2), default_region)
    if "@" in text:
        return Identifier(Kind.EMAIL, text.lower())
    return _read_number(text, "", default_region)


def normalise(identifier: str, default_region: str) -> str:
    """The canonical form hashed: E.164 for a number, an address lower-cased, "" when withheld."""
    return read(identifier, default_region).canonical


def pseudonymise(identifier: str, privacy: PrivacySettings) -> types_pb2.PartyReference:
    """The party reference of an identifier: empty for an anonymous caller (none given, or withheld);
    raises ``UnreadableIdentifier`` for a text that is no identifier."""
    return pseudonym(read(identifier, privacy.default_region), privacy)


def pseudonym(identifier: Identifier, privacy: PrivacySettings) -> types_pb2.PartyReference:
    """The party reference of an identifier already read: one fixed, empty reference when withheld."""
    if not identifier.canonical:
        return types_pb2.PartyReference()
    key, canonical = privacy.hmac_key.get_secret_value().encode(), identifier.canonical
    digest = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
    return types_pb2.PartyReference(hash=digest, masked=mask(canonical, privacy.masked_digits))


def mask(canonical: str, visible: int) -> str:
    """``**********5678`` for a number (E.164); ``j***@***.org`` for an address (the domain may name a
    person)."""
    if "@" in canonical:
        local, _, domain = canonical.partition("@")
        tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
        return f"{local[:1]}***@***" + (f".{tld}" if tld else "")
    # Never the whole subscriber number: a short one (an extension) is masked whole.
    national = phonenumbers.national_significant_number(phonenumbers.parse(canonical))
    shown = canonical[-visible:] if 0 < visible < len(national) else ""
    return "*" * (len(canonical) - len(shown)) + shown


def _withheld_word(text: str) -> bool:
    return _IGNORED_IN_WORDS.sub("", unquote(text)).lower() in WITHHELD_WORDS


def _read_uri(scheme: str, rest: str, default_region: str) -> Identifier:
    """A SIP URI's user part, or a tel URI's number, with its ``phone-context`` when it gives one."""
    if scheme == "tel":
        user = rest
    else:
        user, at, host = rest.rpartition("@")
        host = re.split(r"[;:?]", (host if at else rest).strip(), maxsplit=1)[0].lower()
        if host.endswith(".invalid"):
            return WITHHELD  # RFC 3323: "Anonymous" <sip:anonymous@anonymous.invalid>
        user = user.split(":", 1)[0]  # a password, if any, is no part of the number
    number, _, parameters = unquote(user).partition(";")
    if _withheld_word(number):
        return WITHHELD
    pairs = (parameter.partition("=") for parameter in parameters.split(";"))
    context = next((value.strip() for name, _, value in pairs if name.strip().lower() == "phone-context"), "")
    return _read_number(number.strip(), context, default_region)


def _read_number(text: str, context: str, default_region: str) -> Identifier:
    if any(not (ch.isdecimal() or ch in _SEPARATORS or ch in _PLUS) for ch in text):
        raise UnreadableIdentifier(
            "not a phone number, an e-mail address or a withheld number: a number holds only digits, "
            "one leading '+' and the separators space, '-', '.', '/' and brackets"
        )
    if sum(ch in _PLUS for ch in text) > 1 or (text[0] not in _PLUS and any(ch in _PLUS for ch in text)):
        raise UnreadableIdentifier("not a phone number: a '+' may only lead it")
    digits = [ch for ch in text if ch.isdecimal()]
    if digits and all(int(ch) == 0 for ch in digits):
        return WITHHELD  # what PBXs put in place of a number they do not have (e.g. 0000000000)
    try:
        if context.startswith("+") and text[0] not in _PLUS:
            number = phonenumbers.parse(f"tel:{text};phone-context={context}", default_region)
        else:
            number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as error:
        raise UnreadableIdentifier(f"not a phone number: {_why(error)}") from None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if e164 in KEYPAD_WORDS:
        return WITHHELD
    return Identifier(Kind.PHONE, e164)


def _why(error: phonenumbers.NumberParseException) -> str:
    reasons = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "its country code is not one",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "phonenumbers sees no number in it",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short after its international prefix",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return reasons.get(error.error_type, "phonenumbers cannot read it")
