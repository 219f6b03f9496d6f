"""Automatic assignment within a group: who gets the next ticket, and never above the cap."""

from __future__ import annotations

from services.tickets.assignment import choose
from services.tickets.policies import Group

ROUND = Group("back_office", "round_robin", 2, ())
LEAST = Group("second_line", "least_open", 2, ())


def test_round_robin_takes_the_next_member_after_the_last_one() -> None:
    assert choose(ROUND, ["a", "b", "c"], {}, last="a") == "b"
    assert choose(ROUND, ["a", "b", "c"], {}, last="c") == "a"
    assert choose(ROUND, ["a", "b", "c"], {}, last="") == "a"


def test_round_robin_skips_members_at_their_cap() -> None:
    assert choose(ROUND, ["a", "b", "c"], {"b": 2}, last="a") == "c"


def test_least_open_takes_the_member_with_the_fewest_open_tickets() -> None:
    assert choose(LEAST, ["a", "b", "c"], {"a": 1, "b": 0, "c": 1}, last="b") == "b"


def test_nobody_gets_a_ticket_while_every_member_is_at_the_cap() -> None:
    assert choose(ROUND, ["a", "b"], {"a": 2, "b": 5}, last="") is None
    assert choose(LEAST, [], {}, last="") is None
