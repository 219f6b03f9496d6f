"""The KPI read side over the real engine: the API's rows are the views' rows; staffing is Erlang C."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.kpi import erlang
from services.kpi.handlers import LiveBoard
from services.kpi.service import KpiService
from services.kpi.store import KpiStore
from services.platform.errors import InvalidArgument
from tests.unit.kpi.facts import (
    NINE,
    answered_visit,
    at,
    completed_dispatch,
    queue_settings,
    queue_visit,
    scorecard_weights,
    state_interval,
)


@pytest.fixture
def kpis(embedded_kpi_store: KpiStore) -> KpiService:
    return KpiService(embedded_kpi_store, LiveBoard(), clock=lambda: at(minutes=30))


def test_queue_kpis_are_the_views_rows(kpis: KpiService, embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("c1", wait_s=10.0),
            answered_visit("c2", wait_s=30.0),
            queue_visit("c3", outcome="abandoned"),
        ],
    )

    [row] = kpis.query("queue", 3600, NINE, at(minutes=60))

    assert (row["key"], row["offered"], row["handled"], row["abandoned"]) == ("sales", 3, 2, 1)
    assert row["asa_s"] == pytest.approx(20.0)  # (10 + 30) / 2
    assert row["service_level_answered"] == pytest.approx(0.5)  # 10 s within the default 20 s, 30 s not


def test_agent_kpis_keep_the_contacts_handled_and_add_the_agents_time(
    kpis: KpiService, embedded_kpi_store: KpiStore
) -> None:
    embedded_kpi_store.insert("contact_facts", [answered_visit("c1")])
    embedded_kpi_store.insert(
        "agent_state_intervals",
        [
            state_interval("agent-1", "on_contact", NINE, at(minutes=2)),
            state_interval("agent-1", "ready", at(minutes=2), at(minutes=6)),
        ],
    )

    [row] = kpis.query("agent", 3600, NINE, at(minutes=60))

    assert row["key"] == "agent-1"
    assert row["handled"] == 1
    assert row["occupancy"] == pytest.approx(120 / 360)  # 2 min on contact / (2 on contact + 4 ready)


@pytest.mark.parametrize(
    ("scope", "grain", "until", "message"),
    [
        ("department", 900, at(minutes=60), "scope must be one of"),
        ("queue", 0, at(minutes=60), "interval must be positive"),
        ("queue", 900, NINE, "must be after 'from'"),
    ],
)
def test_a_bad_query_is_refused_naming_what_is_wrong(kpis: KpiService, scope, grain, until, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        kpis.query(scope, grain, NINE, until)


def test_staffing_follows_erlang_c_on_the_queues_target(
    kpis: KpiService, embedded_kpi_store: KpiStore
) -> None:
    embedded_kpi_store.insert("queue_settings", [queue_settings("sales", 30.0, sl_target_percent=90)])

    [advice] = kpis.staffing("sales", arrivals_per_hour=200, aht_s=180)

    assert advice.advice == erlang.staffing_for(200, 180, 0.9, 30.0)
    assert (advice.sl_threshold_s, advice.target_service_level) == (30.0, 0.9)


def test_staffing_uses_the_last_half_hours_arrivals_and_handle_time(
    kpis: KpiService, embedded_kpi_store: KpiStore
) -> None:
    # Four live contacts queued in the half hour before 09:30, handled with 120 s talk each.
    embedded_kpi_store.insert(
        "contact_facts",
        [answered_visit(f"c{n}", queued_at=at(minutes=5 + n)) for n in range(4)]
        + [answered_visit("old", queued_at=NINE - timedelta(hours=1))],
    )

    [advice] = kpis.staffing("sales")

    assert advice.arrivals_per_hour == pytest.approx(8.0)  # 4 in 30 minutes
    assert advice.aht_s == pytest.approx(120.0)


def test_staffing_for_an_unknown_queue_names_the_known_ones(
    kpis: KpiService, embedded_kpi_store: KpiStore
) -> None:
    embedded_kpi_store.insert("queue_settings", [queue_settings("sales", 20.0)])

    with pytest.raises(InvalidArgument, match=r"no queue 'billing'.*known: sales"):
        kpis.staffing("billing")


def test_department_kpis_and_the_scorecard_are_the_views_rows(
    kpis: KpiService, embedded_kpi_store: KpiStore
) -> None:
    embedded_kpi_store.insert(
        "dispatch_facts",
        [
            completed_dispatch("t1", 3600.0),
            completed_dispatch("t2", 7200.0, department="transport", resolved=False),
        ],
    )
    embedded_kpi_store.insert("scorecard_weights", [scorecard_weights()])

    departments = kpis.departments(NINE, at(minutes=60))
    scorecard = kpis.scorecard(NINE.date())

    assert [(row["department"], row["resolution_rate"]) for row in departments] == [
        ("housing", 1.0),
        ("transport", 0.0),
    ]
    assert [(row["department"], row["rank"]) for row in scorecard] == [("housing", 1), ("transport", 2)]
    assert scorecard[0]["score"] == pytest.approx(100.0)
    assert scorecard[1]["score"] == pytest.approx(100 * 0.30 / 0.65), "no follow-up: response and resolution"


def test_department_kpis_need_a_range_that_ends_after_it_begins(kpis: KpiService) -> None:
    with pytest.raises(InvalidArgument, match="must be after"):
        kpis.departments(NINE, NINE)
