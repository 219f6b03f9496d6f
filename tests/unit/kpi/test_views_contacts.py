"""The queue and IVR KPI views (kpi_contacts, kpi_ivr) on hand-made contact facts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from services.kpi.store import KpiStore, KpiStoreError
from tests.unit.kpi.facts import (
    NINE,
    answered_visit,
    at,
    contact_arrival,
    project,
    queue_settings,
    queue_visit,
    read_view,
)


def contacts(
    store: KpiStore,
    by: str = "queue",
    grain_s: int = 3600,
    start: datetime = NINE,
    end: datetime = NINE + timedelta(hours=1),
) -> list[dict[str, Any]]:
    return read_view(store, "kpi_contacts", "key, interval_start", start, end, by=by, grain_s=grain_s)


def ivr(store: KpiStore, grain_s: int = 3600) -> list[dict[str, Any]]:
    return read_view(store, "kpi_ivr", "key, interval_start", grain_s=grain_s)


def test_visit_outcomes_are_counted_once_each(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            contact_arrival("c1"),
            answered_visit("c1"),
            answered_visit("c2"),
            queue_visit("c3", outcome="abandoned", wait_s=40.0),
            queue_visit("c4", outcome="short_abandon", wait_s=2.0),
            queue_visit("c5", outcome="overflowed", wait_s=60.0),
            queue_visit("c6", outcome="disconnected", wait_s=90.0),
            queue_visit("c7", outcome="callback", callback=True, wait_s=15.0),
            answered_visit("c8", callback=True, wait_s=15.0),
            queue_visit("c9"),
        ],
    )

    [row] = contacts(embedded_kpi_store)

    assert row == row | {
        "key": "sales",
        "interval_start": NINE,
        "offered": 9,  # c1..c9; c1's visit 0 is no queue visit
        "handled": 3,  # c1, c2 and the completed callback c8
        "abandoned": 1,
        "short_abandoned": 1,
        "overflowed": 1,
        "disconnected": 1,
        "callbacks_requested": 2,  # c7 pending, c8 completed
        "callbacks_completed": 1,
        "live_offered": 7,  # 9 - 2 callbacks
        "live_answered": 2,
        "answer_rate": 3 / 9,
        "abandon_rate": 0.125,  # 1 / (9 offered - 1 short abandon)
        "callback_completion_rate": 0.5,  # 1 / 2
    }


def test_three_service_level_variants_differ_on_abandons_and_short_abandons(
    embedded_kpi_store: KpiStore,
) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("c1", wait_s=10.0),
            answered_visit("c2", wait_s=30.0),
            queue_visit("c3", outcome="abandoned", wait_s=5.0),
            queue_visit("c4", outcome="abandoned", wait_s=40.0),
            queue_visit("c5", outcome="short_abandon", wait_s=2.0),
            queue_visit("c6", outcome="overflowed", wait_s=60.0),
        ],
    )

    [row] = contacts(embedded_kpi_store)

    assert project([row], "answered_within_t", "abandoned_within_t", "sl_threshold_s") == [
        {"answered_within_t": 1, "abandoned_within_t": 1, "sl_threshold_s": 20.0}
    ]
    assert row["service_level_answered"] == 0.5  # 1 within T / 2 answered
    assert row["service_level_answered_abandoned"] == 0.25  # 1 / (2 answered + 2 abandoned)
    assert row["service_level_offered"] == 0.2  # 1 / (6 offered - 1 short abandon)


def test_answer_after_exactly_t_seconds_is_within_t(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts", [answered_visit("c1", wait_s=20.0), answered_visit("c2", wait_s=20.001)]
    )

    [row] = contacts(embedded_kpi_store)

    assert row["answered_within_t"] == 1
    assert row["service_level_answered"] == 0.5  # 1 / 2


def test_each_queue_uses_its_own_threshold_and_the_newest_settings(
    embedded_kpi_store: KpiStore,
) -> None:
    embedded_kpi_store.insert(
        "queue_settings", [queue_settings("sales", sl_threshold_s=30.0, version=2, sl_target_percent=90)]
    )
    embedded_kpi_store.insert("queue_settings", [queue_settings("sales", sl_threshold_s=10.0, version=1)])
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("c1", wait_s=25.0),
            queue_visit("c2", outcome="abandoned", wait_s=25.0),
            answered_visit("c3", wait_s=25.0, queue_id="support"),
            queue_visit("c4", outcome="abandoned", wait_s=25.0, queue_id="support"),
        ],
    )

    rows = contacts(embedded_kpi_store)

    assert project(
        rows,
        "key",
        "sl_threshold_s",
        "sl_target_percent",
        "answered_within_t",
        "abandoned_within_t",
        "service_level_answered",
    ) == [
        # sales: T = 30 (version 2), 25 s is within
        {
            "key": "sales",
            "sl_threshold_s": 30.0,
            "sl_target_percent": 90,
            "answered_within_t": 1,
            "abandoned_within_t": 1,
            "service_level_answered": 1.0,
        },
        # support: no settings, so T = 20 s and target 80 %, 25 s is not within
        {
            "key": "support",
            "sl_threshold_s": 20.0,
            "sl_target_percent": 80,
            "answered_within_t": 0,
            "abandoned_within_t": 0,
            "service_level_answered": 0.0,
        },
    ]


def test_threshold_is_null_when_a_row_mixes_queues_with_different_settings(
    embedded_kpi_store: KpiStore,
) -> None:
    embedded_kpi_store.insert("queue_settings", [queue_settings("sales", sl_threshold_s=30.0)])
    embedded_kpi_store.insert(
        "contact_facts",
        [answered_visit("c1", wait_s=25.0), answered_visit("c2", wait_s=25.0, queue_id="support")],
    )

    [row] = contacts(embedded_kpi_store, by="channel")

    assert project([row], "key", "sl_threshold_s", "answered_within_t") == [
        {"key": "voice", "sl_threshold_s": None, "answered_within_t": 1}  # sales' 30 s only
    ]


def test_callbacks_are_in_no_service_level_variant_nor_in_asa(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("c1", wait_s=5.0, callback=True, talk_s=60.0),
            queue_visit("c2", outcome="callback", wait_s=3.0, callback=True),
            answered_visit("c3", wait_s=10.0, talk_s=100.0),
        ],
    )

    [row] = contacts(embedded_kpi_store)

    assert row == row | {
        "answered_within_t": 1,  # c3; c1 waited 5 s, but as a callback
        "service_level_answered": 1.0,  # 1 / 1 live answered
        "service_level_answered_abandoned": 1.0,  # 1 / (1 + 0)
        "service_level_offered": 1.0,  # 1 / 1 live offered, not 1 / 3 offered
        "asa_s": 10.0,  # c3 only
        "aht_s": 80.0,  # (60 + 100) / 2: handle time counts callbacks
    }


def test_wait_and_handle_times_are_averaged(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("c1", wait_s=10.0, talk_s=100.0, hold_s=20.0, wrap_s=30.0, transferred=True),
            answered_visit("c2", wait_s=20.0, talk_s=200.0, hold_s=0.0, wrap_s=10.0),
            queue_visit("c3", outcome="abandoned", wait_s=40.0),
            queue_visit("c4", outcome="abandoned", wait_s=50.0),
            queue_visit("c5", outcome="short_abandon", wait_s=3.0),
        ],
    )

    [row] = contacts(embedded_kpi_store)

    assert row == row | {
        "asa_s": 15.0,  # (10 + 20) / 2
        "aht_s": 180.0,  # ((100 + 20 + 30) + (200 + 0 + 10)) / 2
        "avg_talk_s": 150.0,  # (100 + 200) / 2
        "avg_hold_s": 10.0,  # (20 + 0) / 2
        "avg_wrap_s": 20.0,  # (30 + 10) / 2
        "avg_time_to_abandon_s": 45.0,  # (40 + 50) / 2, the short abandon excluded
        "transfer_rate": 0.5,  # 1 / 2
        "abandon_rate": 0.5,  # 2 / (5 - 1 short abandon)
    }


def test_ratios_with_a_zero_denominator_are_null(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("contact_facts", [queue_visit("c1", outcome="short_abandon", wait_s=2.0)])

    [row] = contacts(embedded_kpi_store)

    assert row["answer_rate"] == 0.0  # 0 / 1 offered
    assert project(
        [row],
        "service_level_answered",
        "service_level_answered_abandoned",
        "service_level_offered",
        "asa_s",
        "aht_s",
        "avg_talk_s",
        "avg_hold_s",
        "avg_wrap_s",
        "avg_time_to_abandon_s",
        "abandon_rate",
        "transfer_rate",
        "callback_completion_rate",
    ) == [
        {
            "service_level_answered": None,
            "service_level_answered_abandoned": None,
            "service_level_offered": None,  # 1 offered - 1 short abandon
            "asa_s": None,
            "aht_s": None,
            "avg_talk_s": None,
            "avg_hold_s": None,
            "avg_wrap_s": None,
            "avg_time_to_abandon_s": None,
            "abandon_rate": None,  # 0 / (1 - 1)
            "transfer_rate": None,
            "callback_completion_rate": None,
        }
    ]


def test_an_older_version_of_a_visit_does_not_count(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts", [queue_visit("c1", version=3, outcome="abandoned", wait_s=40.0)]
    )
    embedded_kpi_store.insert("contact_facts", [answered_visit("c1", version=2)])

    [row] = contacts(embedded_kpi_store)

    assert project([row], "offered", "handled", "abandoned") == [{"offered": 1, "handled": 0, "abandoned": 1}]


def test_a_void_visit_counts_nowhere(embedded_kpi_store: KpiStore) -> None:
    # The caller had gone before routing overflowed c1 from sales to spill: spill's visit never was.
    embedded_kpi_store.insert(
        "contact_facts",
        [
            queue_visit("c1", version=5, outcome="abandoned", wait_s=40.0),
            queue_visit("c1", visit=2, version=5, queue_id="spill", outcome="void"),
            queue_visit("c2", queue_id="spill", outcome="abandoned", wait_s=10.0),
        ],
    )

    rows = contacts(embedded_kpi_store)

    assert project(rows, "key", "offered", "abandoned", "overflowed") == [
        {"key": "sales", "offered": 1, "abandoned": 1, "overflowed": 0},
        {"key": "spill", "offered": 1, "abandoned": 1, "overflowed": 0},
    ]


def test_visits_count_in_the_interval_of_their_queue_entry(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            queue_visit("before", queued_at=at(seconds=-0.001)),
            queue_visit("c1", queued_at=at(minutes=5)),
            answered_visit("c2", queued_at=at(minutes=14, seconds=59.999), wait_s=30.0),
            queue_visit("c3", queued_at=at(minutes=15)),
            queue_visit("c4", queued_at=at(minutes=59)),
            queue_visit("after", queued_at=at(minutes=60)),
        ],
    )

    quarter_hours = contacts(embedded_kpi_store, grain_s=900)
    days = contacts(embedded_kpi_store, grain_s=86400)

    assert project(quarter_hours, "interval_start", "offered", "handled") == [
        {"interval_start": NINE, "offered": 2, "handled": 1},  # c2 answered at 09:15:30, queued before
        {"interval_start": at(minutes=15), "offered": 1, "handled": 0},
        {"interval_start": at(minutes=45), "offered": 1, "handled": 0},
    ]
    assert project(days, "interval_start", "offered") == [
        {"interval_start": NINE.replace(hour=0), "offered": 4}  # the UTC day, inside [09:00, 10:00)
    ]


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("queue", {"sales": 2, "support": 1}),
        ("channel", {"chat": 1, "voice": 2}),
        ("agent", {"": 1, "agent-1": 1, "agent-2": 1}),  # nobody answered c3
        ("skill_group", {"": 1, "sales-team": 1, "vip-team": 1}),
    ],
)
def test_visits_are_grouped_by_the_requested_key(
    embedded_kpi_store: KpiStore, by: str, expected: dict[str, int]
) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("c1"),
            answered_visit("c2", channel="chat", agent_id="agent-2", skill_group="vip-team"),
            queue_visit("c3", queue_id="support", outcome="abandoned", wait_s=30.0),
        ],
    )

    rows = contacts(embedded_kpi_store, by=by)

    assert {row["key"]: row["offered"] for row in rows} == expected


def test_an_unknown_grouping_fails_even_without_facts(embedded_kpi_store: KpiStore) -> None:
    with pytest.raises(KpiStoreError, match="by must be queue, channel, agent or skill_group"):
        contacts(embedded_kpi_store, by="department")


def test_ivr_outcomes_are_counted_per_channel(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            contact_arrival("c1", outcome="self_service"),
            contact_arrival("c2", outcome="self_service"),
            contact_arrival("c3", outcome="ivr_abandon"),
            contact_arrival("c4", outcome="routed"),
            queue_visit("c4"),
            contact_arrival("c5", outcome=""),
            contact_arrival("c6", outcome="routed", channel="chat"),
        ],
    )

    rows = ivr(embedded_kpi_store)

    assert project(
        rows, "key", "contacts", "self_service", "ivr_abandon", "routed", "in_ivr", "self_service_rate"
    ) == [
        {
            "key": "chat",
            "contacts": 1,
            "self_service": 0,
            "ivr_abandon": 0,
            "routed": 1,
            "in_ivr": 0,
            "self_service_rate": 0.0,  # 0 / 1
        },
        {
            "key": "voice",
            "contacts": 5,  # c4's queue visit is not a contact
            "self_service": 2,
            "ivr_abandon": 1,
            "routed": 1,
            "in_ivr": 1,
            "self_service_rate": 0.4,  # 2 / 5
        },
    ]


def test_ivr_counts_the_newest_outcome_in_the_interval_of_arrival(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            contact_arrival("c1", outcome="", arrival=at(minutes=20)),
            contact_arrival("early", outcome="self_service", arrival=at(minutes=-1)),
        ],
    )
    embedded_kpi_store.insert(
        "contact_facts", [contact_arrival("c1", outcome="self_service", arrival=at(minutes=20), version=2)]
    )

    rows = ivr(embedded_kpi_store, grain_s=900)

    assert project(rows, "interval_start", "contacts", "self_service", "in_ivr") == [
        {"interval_start": at(minutes=15), "contacts": 1, "self_service": 1, "in_ivr": 0}
    ]
