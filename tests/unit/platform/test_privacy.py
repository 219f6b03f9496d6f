"""Caller numbers become a keyed HMAC and a masked form; neither gives the number back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from services.platform.privacy import pseudonymise
from services.platform.settings import PrivacySettings

KEY = PrivacySettings(hmac_key=SecretStr("test-key"), masked_digits=4)
numbers = st.text(alphabet="0123456789", min_size=5, max_size=15).map(lambda digits: "+" + digits)


def test_one_number_hashes_alike_however_telephony_formatted_it() -> None:
    assert pseudonymise("+44 20 7946 0958", KEY) == pseudonymise("+442079460958", KEY)
    assert pseudonymise("+44 (20) 7946-0958", KEY).masked == "*********0958"


def test_the_hash_depends_on_the_key() -> None:
    other = PrivacySettings(hmac_key=SecretStr("another-key"))
    assert pseudonymise("+442079460958", KEY).hash != pseudonymise("+442079460958", other).hash


def test_an_address_is_masked_down_to_its_first_letter_and_top_level_domain() -> None:
    party = pseudonymise("John.Smith@Example.org", KEY)
    assert party.masked == "j***@***.org"
    assert party.hash == pseudonymise("john.smith@example.org", KEY).hash


def test_an_anonymous_caller_has_no_reference() -> None:
    assert pseudonymise("  ", KEY).hash == ""


@given(numbers)
def test_neither_form_carries_more_than_the_last_four_digits(number: str) -> None:
    party = pseudonymise(number, KEY)
    digits = number.lstrip("+")
    assert sum(ch.isdigit() for ch in party.masked) == 4
    assert party.masked.endswith(digits[-4:])
    assert digits not in party.hash


def test_a_number_no_longer_than_the_visible_digits_is_masked_whole() -> None:
    assert pseudonymise("1234", KEY).masked == "****"
