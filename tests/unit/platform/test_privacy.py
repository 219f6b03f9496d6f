"""Caller numbers become a keyed HMAC of their E.164 form and a masked form; neither gives the number back."""

from __future__ import annotations

import phonenumbers
import pytest
from callcenter.common.v1 import types_pb2
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import SecretStr

from services.platform.privacy import KEYPAD_WORDS, Kind, UnreadableIdentifier, normalise, pseudonymise, read
from services.platform.settings import PrivacySettings

KEY = PrivacySettings(hmac_key=SecretStr("test-key"), masked_digits=4)
E164 = phonenumbers.PhoneNumberFormat.E164
ANONYMOUS = types_pb2.PartyReference()


@pytest.mark.parametrize(
    "written",
    [
        "+8613912345678",
        "008613912345678",
        "00 86 139 1234 5678",
        "13912345678",
        "139 1234 5678",
        "+86 139-1234-5678",
        "+86 (0)139 1234 5678",
        "8613912345678",
        "17951 13912345678",
        " +86.139.1234.5678 ",
        "\uff0b\uff18\uff16\u3000\uff11\uff13\uff19\u3000\uff11\uff12\uff13\uff14\u3000\uff15\uff16\uff17\uff18",
        "tel:+86-139-1234-5678",
        "tel:13912345678;phone-context=+86",
        "sip:+8613912345678@10.0.0.1;user=phone",
        "sips:%2B8613912345678@gw.example",
        '"Zhang San" <sip:13912345678@gw.example:5060;transport=udp>;tag=a1b2',
        "<tel:+8613912345678>",
    ],
)
def test_one_mobile_hashes_alike_in_every_form_telephony_writes_it(written: str) -> None:
    assert pseudonymise(written, KEY) == pseudonymise("+8613912345678", KEY)
    assert normalise(written, KEY.default_region) == "+8613912345678"


@pytest.mark.parametrize(
    "written",
    ["+86 10 6552 9988", "010 6552 9988", "(010) 6552-9988", "0086 10 65529988", "+86 (0)10 65529988"],
)
def test_one_fixed_line_hashes_alike_with_or_without_its_trunk_prefix(written: str) -> None:
    assert normalise(written, "CN") == "+861065529988"


@pytest.mark.parametrize(
    ("written", "region"),
    [
        ("+44 20 7946 0958", "CN"),
        ("0044 20 7946 0958", "CN"),
        ("+44 (0)20 7946-0958", "CN"),
        ("020 7946 0958", "GB"),
        ("00442079460958", "GB"),
    ],
)
def test_a_foreign_number_is_read_by_its_country_code_or_in_the_default_region(
    written: str, region: str
) -> None:
    assert normalise(written, region) == "+442079460958"


def test_the_hash_depends_on_the_key() -> None:
    other = PrivacySettings(hmac_key=SecretStr("another-key"))
    assert pseudonymise("+442079460958", KEY).hash != pseudonymise("+442079460958", other).hash


def test_an_address_is_lower_cased_and_masked_down_to_its_first_letter_and_top_level_domain() -> None:
    party = pseudonymise("John.Smith@Example.org", KEY)
    assert party.masked == "j***@***.org"
    assert party.hash == pseudonymise("john.smith@example.org", KEY).hash
    assert read("John <John.Smith@Example.org>", "CN").kind is Kind.EMAIL


@pytest.mark.parametrize(
    "withheld",
    [
        "",
        "  ",
        "anonymous",
        "Anonymous",
        "ANONYMOUS",
        "restricted",
        "Restricted",
        "withheld",
        "Number Withheld",
        "private",
        "Private Number",
        "unknown",
        "<unknown>",
        "unavailable",
        "Unavailable",
        "not available",
        "blocked",
        "No Caller ID",
        "out of area",
        "CLIR",
        "P",
        "O",
        "0",
        "0000000000",
        "+000",
        "sip:anonymous@anonymous.invalid",
        '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=9fxced76sl',
        "<sip:thisis@anonymous.invalid>",
        "sip:anonymous@10.1.2.3;transport=udp",
        "sips:Restricted@carrier.example",
        "tel:anonymous",
        "tel:unavailable",
        "+266696687",
        "+7378742833",
    ],
)
def test_every_withheld_form_is_the_one_anonymous_caller_with_no_reference(withheld: str) -> None:
    assert read(withheld, "CN").kind is Kind.WITHHELD
    assert pseudonymise(withheld, KEY) == ANONYMOUS


def test_no_keypad_spelling_of_a_withheld_word_is_a_valid_number() -> None:
    assert not any(phonenumbers.is_valid_number(phonenumbers.parse(word)) for word in KEYPAD_WORDS)


@pytest.mark.parametrize(
    ("written", "because"),
    [
        ("1", "sees no number"),
        ("abc", "holds only digits"),
        ("+999 1234 5678", "country code"),
        ("+1-800-FLOWERS", "holds only digits"),
        ("139abc12345678", "holds only digits"),
        ("13912345678 ext. 12", "holds only digits"),
        ("*31#13912345678", "holds only digits"),
        ("86+13912345678", "may only lead"),
        ("sip:alice@pbx.example", "holds only digits"),
        ("tel:+999-1234", "country code"),
        ("<sip:13912345678;phone-context=+999@gw>", "country code"),
    ],
)
def test_a_text_that_is_no_number_is_refused_without_repeating_it(written: str, because: str) -> None:
    with pytest.raises(UnreadableIdentifier, match=because) as refused:
        pseudonymise(written, KEY)
    digits = "".join(ch for ch in written if ch.isdigit())
    assert written not in str(refused.value) and (len(digits) < 4 or digits not in str(refused.value))


@pytest.mark.parametrize(
    ("written", "kept"), [("12345", "+8612345"), ("95588", "+8695588"), ("10086", "+8610086")]
)
def test_a_short_service_number_is_kept_in_its_region_and_joins_its_international_form(
    written: str, kept: str
) -> None:
    assert normalise(written, "CN") == normalise(kept, "CN") == kept
    assert pseudonymise(written, KEY).masked == "****" + kept[-4:]


def test_a_possible_number_outside_phonenumbers_known_ranges_is_kept_not_refused() -> None:
    number = phonenumbers.parse("+442100000042")
    assert phonenumbers.is_possible_number(number) and not phonenumbers.is_valid_number(number)

    assert normalise("+44 21 0000 0042", "CN") == "+442100000042"


def test_a_number_no_longer_than_the_visible_digits_is_masked_whole_country_code_aside() -> None:
    assert pseudonymise("8001", PrivacySettings(masked_digits=4)).masked == "*******"
    assert pseudonymise("12", PrivacySettings(masked_digits=4)).masked == "*****"


# Any valid number, however it is written ---------------------------------------------------------

REGIONS = ["CN", "HK", "GB", "US", "DE", "FR", "JP", "SG", "IN", "BR", "AU"]


@st.composite
def valid_numbers(draw: st.DrawFn) -> phonenumbers.PhoneNumber:
    """A valid number: a region's example mobile or fixed line with its last digits changed."""
    region = draw(st.sampled_from(REGIONS))
    kind = draw(
        st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
    )
    example = phonenumbers.example_number_for_type(region, kind)
    assume(example is not None)
    national = str(example.national_number)
    tail = draw(st.text(alphabet="0123456789", min_size=4, max_size=4))
    number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}")
    assume(phonenumbers.is_valid_number(number))
    return number


separators = st.sampled_from(["", "", " ", "-", ".", "/"])


@st.composite
def written_forms(draw: st.DrawFn, number: phonenumbers.PhoneNumber) -> str:
    """One way telephony or a person writes ``number``, read in CN."""
    e164 = phonenumbers.format_number(number, E164)
    digits = e164[1:]
    spaced = "".join(digit + draw(separators) for digit in digits).rstrip(" -./")
    forms = [
        e164,
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
        "+" + spaced,
        "00" + spaced,
        "00 " + phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)[1:],
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.RFC3966),
        f"sip:{e164}@gw.example;user=phone",
        f'"Caller" <sip:00{digits}@10.0.0.1:5060>;tag=x',
    ]
    if phonenumbers.region_code_for_number(number) == "CN":
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        forms += [national, "".join(ch for ch in national if ch.isdigit()), digits]
    return draw(st.sampled_from(forms))


@given(st.data())
def test_any_form_of_a_valid_number_hashes_as_its_e164_form(data: st.DataObject) -> None:
    number = data.draw(valid_numbers())
    e164 = phonenumbers.format_number(number, E164)
    written = data.draw(written_forms(number))

    assert pseudonymise(written, KEY) == pseudonymise(e164, KEY), written


@given(st.data(), st.integers(min_value=1, max_value=6))
def test_the_masked_form_shows_only_the_last_digits_of_any_form(data: st.DataObject, visible: int) -> None:
    number = data.draw(valid_numbers())
    e164 = phonenumbers.format_number(number, E164)
    party = pseudonymise(data.draw(written_forms(number)), PrivacySettings(masked_digits=visible))

    assert party.masked == "*" * (len(e164) - visible) + e164[-visible:]
    assert sum(ch.isdigit() for ch in party.masked) == visible
    assert str(number.national_number) not in party.hash


texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789+-. ()/", max_size=24),
    st.builds("sip:{}@{}".format, st.text(max_size=20), st.text(max_size=12)),
    st.builds("tel:{};phone-context={}".format, st.text(max_size=20), st.text(max_size=6)),
    st.builds('"{}" <{}>;tag={}'.format, st.text(max_size=8), st.text(max_size=24), st.text(max_size=4)),
)


@given(texts)
def test_any_text_is_read_or_refused_and_nothing_else(text: str) -> None:
    try:
        identifier = read(text, "CN")
    except UnreadableIdentifier:
        return
    assert (identifier.kind is Kind.WITHHELD) == (identifier.canonical == "")
    party = pseudonymise(text, KEY)
    assert (party.hash == "") == (identifier.kind is Kind.WITHHELD)
