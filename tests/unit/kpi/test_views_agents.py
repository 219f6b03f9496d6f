"""The agent KPI views (kpi_agents, kpi_skill_groups, kpi_not_ready) on hand-made state intervals."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from services.kpi.store import KpiStore
from tests.unit.kpi.facts import NINE, answered_visit, at, offer, project, read_view, state_interval

STATE_TIMES = ("ready_s", "not_ready_s", "reserved_s", "on_contact_s", "wrap_up_s")


def agents(
    store: KpiStore, grain_s: int = 900, start: datetime = NINE, end: datetime = NINE + timedelta(hours=1)
) -> list[dict[str, Any]]:
    return read_view(
        store, "kpi_agents", "agent_id, skill_group, interval_start", start, end, grain_s=grain_s
    )


def test_an_interval_crossing_a_boundary_splits_between_buckets(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals", [state_interval("agent-1", "ready", at(minutes=10), at(minutes=20))]
    )

    rows = agents(embedded_kpi_store)

    assert project(rows, "interval_start", "ready_s", "logged_in_s") == [
        {"interval_start": NINE, "ready_s": 300.0, "logged_in_s": 300.0},  # 09:10-09:15
        {"interval_start": at(minutes=15), "ready_s": 300.0, "logged_in_s": 300.0},  # 09:15-09:20
    ]


def test_intervals_are_clipped_to_the_window(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals",
        [
            state_interval("agent-1", "not_ready", at(minutes=-10), at(minutes=5)),
            state_interval("agent-1", "on_contact", at(minutes=55), at(minutes=70)),
            state_interval("agent-1", "ready", at(minutes=-20), at(minutes=-10)),
        ],
    )

    rows = agents(embedded_kpi_store)

    assert project(rows, "interval_start", "not_ready_s", "on_contact_s") == [
        {"interval_start": NINE, "not_ready_s": 300.0, "on_contact_s": 0.0},  # 09:00-09:05
        {"interval_start": at(minutes=45), "not_ready_s": 0.0, "on_contact_s": 300.0},  # 09:55-10:00
    ]


def test_an_open_interval_runs_until_the_end_of_a_past_window(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals", [state_interval("agent-1", "ready", at(minutes=50), None)]
    )

    rows = agents(embedded_kpi_store)

    assert project(rows, "interval_start", "ready_s") == [
        {"interval_start": at(minutes=45), "ready_s": 600.0}  # 09:50 until `to` at 10:00
    ]


def test_a_closed_version_replaces_the_open_one(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals", [state_interval("agent-1", "on_contact", at(minutes=2), at(minutes=4))]
    )
    embedded_kpi_store.insert(
        "agent_state_intervals", [state_interval("agent-1", "on_contact", at(minutes=2), None)]
    )

    rows = agents(embedded_kpi_store)

    assert project(rows, "interval_start", "on_contact_s") == [
        {"interval_start": NINE, "on_contact_s": 120.0}  # not the open version's 58 minutes
    ]


def test_occupancy_counts_ready_but_not_reserved_time(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals",
        [
            state_interval("agent-1", "ready", at(minutes=0), at(minutes=1, seconds=40)),
            state_interval("agent-1", "reserved", at(minutes=1, seconds=40), at(minutes=2)),
            state_interval("agent-1", "on_contact", at(minutes=2), at(minutes=7)),
            state_interval("agent-1", "wrap_up", at(minutes=7), at(minutes=8, seconds=40)),
            state_interval("agent-1", "not_ready", at(minutes=8, seconds=40), at(minutes=15), reason="break"),
        ],
    )

    [row] = agents(embedded_kpi_store)

    assert project([row], "logged_in_s", *STATE_TIMES, "handling_s", "occupancy") == [
        {
            "logged_in_s": 900.0,  # 100 + 20 + 300 + 100 + 380
            "ready_s": 100.0,
            "not_ready_s": 380.0,
            "reserved_s": 20.0,
            "on_contact_s": 300.0,
            "wrap_up_s": 100.0,
            "handling_s": 400.0,  # 300 + 100
            "occupancy": 0.8,  # 400 / (400 + 100)
        }
    ]
    assert row["utilisation"] == pytest.approx(400 / 900)


def test_offers_are_counted_by_outcome(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "offer_facts",
        [
            offer("o1", "accepted"),
            offer("o2", "accepted"),
            offer("o3", "rejected"),
            offer("o4", "timed_out"),
            offer("o5", "withdrawn"),
            offer("o6", "contact_ended"),
            offer("o7", ""),
            offer("other", "accepted", agent_id="agent-2"),
            offer("late", "accepted", offered_at=at(minutes=60)),
        ],
    )

    rows = agents(embedded_kpi_store)

    assert project(
        rows,
        "agent_id",
        "skill_group",
        "offers",
        "accepted",
        "rejected",
        "missed",
        "withdrawn",
        "contact_ended",
    )[0] == {
        "agent_id": "agent-1",
        "skill_group": "",  # no state interval to take it from
        "offers": 7,
        "accepted": 2,
        "rejected": 1,
        "missed": 1,
        "withdrawn": 1,
        "contact_ended": 1,
    }
    assert rows[0]["agent_answer_rate"] == 0.5  # 2 / (2 + 1 + 1): not withdrawn, ended or ringing
    assert rows[0]["logged_in_s"] == 0.0


def test_a_settled_offer_replaces_the_ringing_one(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("offer_facts", [offer("o1", "timed_out")])
    embedded_kpi_store.insert("offer_facts", [offer("o1", "")])

    [row] = agents(embedded_kpi_store)

    assert project([row], "offers", "missed", "agent_answer_rate") == [
        {"offers": 1, "missed": 1, "agent_answer_rate": 0.0}  # 0 / 1
    ]


def test_an_offer_takes_the_skill_group_of_the_state_current_at_the_offer(
    embedded_kpi_store: KpiStore,
) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals",
        [
            state_interval("agent-1", "ready", at(minutes=0), at(minutes=5)),
            state_interval("agent-1", "ready", at(minutes=5), at(minutes=20), skill_group="vip-team"),
        ],
    )
    embedded_kpi_store.insert("offer_facts", [offer("o1", "accepted", offered_at=at(minutes=16))])

    rows = agents(embedded_kpi_store)

    assert project(rows, "skill_group", "interval_start", "ready_s", "offers") == [
        {"skill_group": "sales-team", "interval_start": NINE, "ready_s": 300.0, "offers": 0},
        {"skill_group": "vip-team", "interval_start": NINE, "ready_s": 600.0, "offers": 0},
        {"skill_group": "vip-team", "interval_start": at(minutes=15), "ready_s": 300.0, "offers": 1},
    ]


def test_handled_contacts_count_for_the_answering_agent(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("c1", talk_s=100.0, hold_s=20.0, wrap_s=30.0),
            answered_visit("c2", talk_s=200.0, hold_s=0.0, wrap_s=10.0),
            answered_visit("c3", agent_id="agent-2"),
            answered_visit("c4", queued_at=at(minutes=-5), wait_s=330.0, talk_s=40.0),
        ],
    )

    rows = agents(embedded_kpi_store)

    assert project(rows, "agent_id", "interval_start", "handled", "handle_time_s", "aht_s") == [
        # c1, c2 and c4, answered at 09:00:30, queued before the window
        {
            "agent_id": "agent-1",
            "interval_start": NINE,
            "handled": 3,
            "handle_time_s": 400.0,  # (100 + 20 + 30) + (200 + 0 + 10) + 40
            "aht_s": 400 / 3,
        },
        {"agent_id": "agent-2", "interval_start": NINE, "handled": 1, "handle_time_s": 120.0, "aht_s": 120.0},
    ]


def test_agent_ratios_with_a_zero_denominator_are_null(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals", [state_interval("agent-1", "not_ready", at(minutes=0), at(minutes=10))]
    )
    embedded_kpi_store.insert("offer_facts", [offer("o1", "withdrawn")])

    [row] = agents(embedded_kpi_store)

    assert project([row], "utilisation", "occupancy", "agent_answer_rate", "aht_s") == [
        {
            "utilisation": 0.0,  # 0 / 600
            "occupancy": None,  # 0 / (0 + 0)
            "agent_answer_rate": None,  # the withdrawn offer is not in the denominator
            "aht_s": None,
        }
    ]


def test_skill_group_ratios_are_computed_from_sums(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals",
        [
            state_interval("agent-1", "ready", at(minutes=0), at(minutes=5)),
            state_interval("agent-1", "on_contact", at(minutes=5), at(minutes=10)),
            state_interval("agent-2", "ready", at(minutes=0), at(minutes=1, seconds=40)),
            state_interval("agent-2", "wrap_up", at(minutes=1, seconds=40), at(minutes=6, seconds=40)),
            state_interval("agent-2", "not_ready", at(minutes=6, seconds=40), at(minutes=10)),
            state_interval("agent-3", "ready", at(minutes=0), at(minutes=10), skill_group="vip-team"),
        ],
    )
    embedded_kpi_store.insert(
        "offer_facts",
        [
            offer("o1", "accepted", offered_at=at(minutes=4)),
            offer("o2", "timed_out", offered_at=at(minutes=1), agent_id="agent-2"),
        ],
    )
    embedded_kpi_store.insert("contact_facts", [answered_visit("c1", talk_s=100.0, wrap_s=50.0)])

    rows = read_view(embedded_kpi_store, "kpi_skill_groups", "skill_group, interval_start", grain_s=900)

    assert rows[0] == rows[0] | {
        "skill_group": "sales-team",
        "interval_start": NINE,
        "agents": 2,
        "logged_in_s": 1200.0,  # agent-1 300 + 300, agent-2 100 + 300 + 200
        "ready_s": 400.0,  # 300 + 100
        "not_ready_s": 200.0,
        "reserved_s": 0.0,
        "on_contact_s": 300.0,
        "wrap_up_s": 300.0,
        "handling_s": 600.0,
        "occupancy": 0.6,  # 600 / (600 + 400), not the mean of 0.5 and 0.75
        "utilisation": 0.5,  # 600 / 1200
        "offers": 2,
        "accepted": 1,
        "rejected": 0,
        "missed": 1,
        "withdrawn": 0,
        "contact_ended": 0,
        "agent_answer_rate": 0.5,  # 1 / (1 + 0 + 1)
        "handled": 1,
        "handle_time_s": 150.0,
        "aht_s": 150.0,  # 150 / 1
    }
    assert project(rows[1:], "skill_group", "agents", "ready_s", "occupancy") == [
        {"skill_group": "vip-team", "agents": 1, "ready_s": 600.0, "occupancy": 0.0}  # 0 / (0 + 600)
    ]


def test_not_ready_time_splits_by_reason_and_counts_where_it_started(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "agent_state_intervals",
        [
            state_interval("agent-1", "not_ready", at(minutes=-5), at(minutes=5), reason="meeting"),
            state_interval("agent-1", "not_ready", at(minutes=10), at(minutes=20), reason="break"),
            state_interval("agent-1", "not_ready", at(minutes=20), at(minutes=25), reason="lunch"),
            state_interval("agent-1", "ready", at(minutes=25), at(minutes=40)),
            state_interval("agent-1", "not_ready", at(minutes=40), at(minutes=44), reason="break"),
        ],
    )

    rows = read_view(embedded_kpi_store, "kpi_not_ready", "agent_id, interval_start, reason", grain_s=900)

    assert project(rows, "reason", "interval_start", "not_ready_s", "occurrences") == [
        {"reason": "break", "interval_start": NINE, "not_ready_s": 300.0, "occurrences": 1},  # 09:10-09:15
        # 09:00-09:05 in the window; it started before 09:00, so no occurrence in it
        {"reason": "meeting", "interval_start": NINE, "not_ready_s": 300.0, "occurrences": 0},
        {"reason": "break", "interval_start": at(minutes=15), "not_ready_s": 300.0, "occurrences": 0},
        {"reason": "lunch", "interval_start": at(minutes=15), "not_ready_s": 300.0, "occurrences": 1},
        {"reason": "break", "interval_start": at(minutes=30), "not_ready_s": 240.0, "occurrences": 1},
    ]
