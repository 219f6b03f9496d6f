"""The snapshot codec gives back the state it was given, whatever the state is made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum

from callcenter.common.v1 import types_pb2
from hypothesis import given
from hypothesis import strategies as st

from services.platform.codec import dataclass_codec


class Colour(IntEnum):
    RED = 1
    BLUE = 2


@dataclass(frozen=True)
class Inner:
    at: datetime
    lasted: timedelta


@dataclass(frozen=True)
class State:
    state_id: str
    colour: Colour = Colour.RED
    count: int = 0
    ratio: float = 0.0
    flag: bool = False
    day: date | None = None
    inner: Inner | None = None
    pairs: tuple[tuple[str, int], ...] = ()
    fixed: tuple[str, datetime] | None = None
    tags: frozenset[str] = frozenset()
    by_id: dict[str, Inner] = field(default_factory=dict)
    party: types_pb2.PartyReference | None = None


moments = st.datetimes(timezones=st.just(UTC))
inners = st.builds(Inner, moments, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
states = st.builds(
    State,
    st.text(),
    st.sampled_from(Colour),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none() | st.dates(),
    st.none() | inners,
    st.lists(st.tuples(st.text(), st.integers())).map(tuple),
    st.none() | st.tuples(st.text(), moments),
    st.frozensets(st.text()),
    st.dictionaries(st.text(), inners),
    st.none() | st.builds(types_pb2.PartyReference, hash=st.text(), masked=st.text()),
)
encode, decode = dataclass_codec(State)


@given(states)
def test_a_state_comes_back_as_it_was_encoded(state: State) -> None:
    assert decode(encode(state)) == state


def test_a_field_added_since_the_snapshot_takes_its_default() -> None:
    old = b'{"state_id":"s-1","count":3}'
    assert decode(old) == State("s-1", count=3)
