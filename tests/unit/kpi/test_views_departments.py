"""The departments' closed-loop views (kpi_departments, kpi_department_scorecard), on facts written by
hand and on the facts the ticket fold makes of a ticket's events."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.kpi.scorecard import load_scorecard, weight_rows
from services.kpi.store import KpiStore
from services.kpi.tickets import TicketFold, dispatch_rows, fold_ticket, ticket_row
from services.platform.settings import Settings
from tests.support.center import T0
from tests.unit.kpi.facts import (
    NINE,
    at,
    completed_dispatch,
    dispatch,
    project,
    read_view,
    scorecard_weights,
)
from tests.unit.kpi.ticket_events import DAY, HOUR, closed_loop

MAY = date(2024, 5, 1)


def later(days: float) -> datetime:
    """A moment after the tests run, so a deadline there has not passed."""
    return datetime.now(UTC) + timedelta(days=days)


def housing_month() -> list[dict[str, Any]]:
    """Seven dispatches to housing and one to finance in the tests' hour, and one to housing after it."""
    satisfied = {"follow_up_reached": True, "followed_up_at": at(days=7)}
    return [
        completed_dispatch("h1", 2 * DAY, **satisfied, satisfaction="satisfied"),
        completed_dispatch(
            "h2", 6 * DAY, on_time=False, resolved=False, **satisfied, satisfaction="basically_satisfied"
        ),
        completed_dispatch(
            "h3",
            DAY,
            role="assisting",
            accept_breached=True,
            accepted_on_time=False,
            extensions_requested=1,
            extensions_granted=1,
        ),
        dispatch(  # accepted on time, overdue now, supervised and escalated
            "h4",
            version=4,
            status="accepted",
            accepted_at=at(minutes=30),
            accepted_on_time=True,
            answered_at=at(minutes=30),
            supervision_notices=1,
            escalated=True,
        ),
        dispatch(  # returned as not theirs in its first hour, the return accepted
            "h5",
            version=4,
            status="withdrawn",
            answered_at=at(minutes=60),
            returns=1,
            return_accepted=True,
            inside_s=3600.0,
            inside_since=None,
            ended_at=at(minutes=90),
        ),
        dispatch("h6", accept_due_at=later(1), due_at=later(5)),  # still within both deadlines
        completed_dispatch("h7", 3 * DAY, redo=True, **satisfied, satisfaction="dissatisfied"),
        dispatch("f1", department="finance"),  # never answered, both deadlines long past
        dispatch("next", dispatched_at=at(minutes=60)),
    ]


def test_department_kpis_of_the_dispatches_sent_in_the_range(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("dispatch_facts", housing_month())
    embedded_kpi_store.insert("dispatch_facts", [dispatch("h1", version=1)])

    finance, housing = read_view(embedded_kpi_store, "kpi_departments", "department")

    assert housing == {
        "department": "housing",
        "dispatches": 7,
        "lead_dispatches": 6,  # h3 assisted
        "open_dispatches": 2,  # h4, h6
        "accepted_on_time": 5,  # h1, h2, h4, h5 (by its return), h7
        "acceptance_due": 6,  # every one answered; h6 may still accept in time
        "accepted_on_time_rate": 5 / 6,
        "completed": 4,
        "completed_on_time": 3,  # h1, h3, h7
        "completion_due": 5,  # the completed and h4, overdue; h5 was not theirs, h6 is not due
        "completed_on_time_rate": 0.6,
        "resolved": 3,
        "resolution_rate": 0.75,
        "follow_ups": 3,  # h1, h2, h7 (lead dispatches whose follow-up reached the citizen)
        "satisfied": 2,  # satisfied and basically satisfied
        "satisfaction_rate": 2 / 3,
        "returned": 1,
        "withdrawn": 1,
        "return_rate": 1 / 7,
        "extension_requested": 1,
        "extensions_granted": 1,
        "extension_rate": 1 / 7,
        "avg_inside_s": (2 * DAY + 6 * DAY + DAY + HOUR + 3 * DAY) / 5,  # the five that ended
        "p90_inside_s": pytest.approx(3 * DAY + 0.6 * (6 * DAY - 3 * DAY)),  # rank 0.9 * 4 = 3.6
        "supervised": 1,
        "escalated": 1,
        "redone": 1,
    }
    assert project(
        [finance], "dispatches", "accepted_on_time_rate", "completed_on_time_rate", "resolution_rate"
    ) == [
        {
            "dispatches": 1,
            "accepted_on_time_rate": 0.0,
            "completed_on_time_rate": 0.0,
            "resolution_rate": None,
        }
    ]
    assert (finance["satisfaction_rate"], finance["avg_inside_s"], finance["p90_inside_s"]) == (
        None,
        None,
        None,
    )


def read_scorecard(store: KpiStore, month: date) -> list[dict[str, Any]]:
    return store.query(
        "SELECT * FROM kpi_department_scorecard(month = {month:Date}) ORDER BY rank, department",
        {"month": month},
    )


def test_the_scorecard_weighs_the_months_rates_by_the_weights_in_force(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("dispatch_facts", housing_month())
    embedded_kpi_store.insert("dispatch_facts", [completed_dispatch("w1", DAY, department="water_supply")])
    embedded_kpi_store.insert(
        "scorecard_weights",
        [
            scorecard_weights(1, date(2024, 1, 1)),
            scorecard_weights(
                2, MAY, response=0.2, on_time_completion=0.2, resolution=0.3, satisfaction=0.3, source="f:20"
            ),
            scorecard_weights(3, date(2024, 6, 1), response=1.0, resolution=0.0, satisfaction=0.0),
        ],
    )

    rows = read_scorecard(embedded_kpi_store, date(2024, 5, 17))

    assert [(row["department"], row["rank"], row["weights_version"], row["month"]) for row in rows] == [
        ("water_supply", 1, 2, MAY),
        ("housing", 2, 2, MAY),
        ("finance", 3, 2, MAY),
    ]
    water, housing, finance = rows
    # water_supply had no follow-up: its other weights count in full
    assert water["score"] == pytest.approx(100.0)
    assert water["satisfaction_rate"] is None
    # the whole month: housing's "next" dispatch too, unanswered and overdue now
    assert housing["score"] == pytest.approx(100 * (0.2 * 5 / 7 + 0.2 * 3 / 6 + 0.3 * 0.75 + 0.3 * 2 / 3))
    assert finance["score"] == pytest.approx(0.0)
    assert project([housing], "response_weight", "on_time_completion_weight", "resolution_weight") == [
        {"response_weight": 0.2, "on_time_completion_weight": 0.2, "resolution_weight": 0.3}
    ]


def test_a_month_before_every_weights_version_has_no_scorecard(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("dispatch_facts", housing_month())
    embedded_kpi_store.insert("scorecard_weights", [scorecard_weights(1, date(2024, 6, 1))])

    assert read_scorecard(embedded_kpi_store, MAY) == []


def test_the_newest_load_of_a_weights_version_wins(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("dispatch_facts", [completed_dispatch("w1", DAY, department="water_supply")])
    embedded_kpi_store.insert(
        "scorecard_weights", [scorecard_weights(1, loaded_at=NINE + timedelta(hours=1))]
    )
    embedded_kpi_store.insert(
        "scorecard_weights", [scorecard_weights(1, response=1.0, resolution=0.0, satisfaction=0.0)]
    )

    [row] = read_scorecard(embedded_kpi_store, MAY)

    assert (row["response_weight"], row["resolution_weight"]) == (0.3, 0.35)


def test_the_folded_closed_loop_reads_back_as_the_departments_numbers(embedded_kpi_store: KpiStore) -> None:
    fold = TicketFold("t-1")
    for envelope in closed_loop().events:
        fold, _ = fold_ticket(fold, envelope)
    embedded_kpi_store.insert("ticket_facts", [ticket_row(fold)])  # type: ignore[list-item]
    embedded_kpi_store.insert("dispatch_facts", dispatch_rows(fold))
    embedded_kpi_store.insert(
        "scorecard_weights", weight_rows(load_scorecard(Settings().kpi.scorecard_file), NINE)
    )

    housing, water = read_view(
        embedded_kpi_store, "kpi_departments", "department", start=T0, end=T0 + timedelta(days=30)
    )
    november = {row["department"]: row for row in read_scorecard(embedded_kpi_store, T0.date())}
    [december] = read_scorecard(embedded_kpi_store, date(2026, 12, 1))

    # housing answered d1 by returning it in time; the case was not theirs
    assert project(
        [housing], "dispatches", "accepted_on_time_rate", "completed", "return_rate", "avg_inside_s"
    ) == [
        {
            "dispatches": 1,
            "accepted_on_time_rate": 1.0,
            "completed": 0,
            "return_rate": 1.0,
            "avg_inside_s": 3 * HOUR,
        }
    ]
    assert project(
        [water],
        "dispatches",
        "accepted_on_time_rate",
        "completed_on_time_rate",
        "resolution_rate",
        "satisfaction_rate",
        "extension_rate",
        "supervised",
        "redone",
        "avg_inside_s",
    ) == [
        {
            "dispatches": 2,  # d2 and its redo d3
            "accepted_on_time_rate": 1.0,
            "completed_on_time_rate": 0.5,  # d2 late, d3 in time
            "resolution_rate": 1.0,
            "satisfaction_rate": 0.5,  # d2 dissatisfied, d3 basically satisfied
            "extension_rate": 0.5,
            "supervised": 1,
            "redone": 1,
            "avg_inside_s": (9 * DAY - 6 * HOUR + DAY) / 2,
        }
    ]
    # The shipped weights (30% response, 35% resolution, 35% satisfaction), month by month of dispatch:
    # November has d1 and d2 (the citizen dissatisfied), December the redo d3 (satisfied).
    assert november["water_supply"]["score"] == pytest.approx(100 * (0.30 * 1.0 + 0.35 * 1.0 + 0.35 * 0.0))
    assert november["housing"]["score"] == pytest.approx(100.0), "only its response rate is known"
    assert (december["department"], december["score"]) == ("water_supply", pytest.approx(100.0))
