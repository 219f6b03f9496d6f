"""Ticket and live views (kpi_tickets, kpi_ticket_states, live_gauges_now, staffing_advice_now); the
approval views are in test_views_approvals."""

from __future__ import annotations

from typing import Any

from services.kpi.store import KpiStore
from tests.unit.kpi.facts import at, project, read_view, state_visit, ticket


def test_ticket_backlog_sla_and_reopen_rate(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "ticket_facts",
        [
            ticket(
                "t1",
                status="resolved",
                first_response_at=at(minutes=10),
                first_response_s=600.0,
                resolved_at=at(minutes=60),
                resolution_s=3600.0,
            ),
            ticket(
                "t2",
                status="closed",
                first_response_at=at(minutes=30),
                first_response_s=1800.0,
                first_response_breached=True,
                resolved_at=at(minutes=120),
                resolution_s=7200.0,
                resolution_breached=True,
                reopen_count=1,
            ),
            ticket("t3", version=2, status="in_progress"),
            ticket(
                "t4", status="waiting_on_customer", first_response_at=at(minutes=20), first_response_s=1200.0
            ),
            ticket("early", status="new", created_at=at(minutes=-1)),
        ],
    )
    embedded_kpi_store.insert("ticket_facts", [ticket("t3", version=1, status="closed")])

    [row] = read_view(embedded_kpi_store, "kpi_tickets", "department, ticket_type")

    assert row == {
        "department": "billing",
        "ticket_type": "complaint",
        "created": 4,
        "open_backlog": 2,  # t3 (its newest version), t4
        "first_response_sla": 2 / 3,  # t1, t4 in time / t1, t2, t4 answered; t3 still waits
        "resolution_sla": 0.5,  # t1 in time / t1, t2 resolved
        "avg_first_response_s": 1200.0,  # (600 + 1800 + 1200) / 3
        "avg_resolution_s": 5400.0,  # (3600 + 7200) / 2
        "reopened": 1,
        "resolved": 2,
        "reopen_rate": 0.5,  # 1 / 2
        "resolved_on_first_contact": 0,
        "first_contact_resolution_rate": 0.0,
        "escalated": 0,
        "escalation_rate": 0.0,
        "dispatched": 0,
        "merged": 0,
    }


def test_merged_tickets_leave_the_backlog_and_fcr_counts_resolved_tickets_only(
    embedded_kpi_store: KpiStore,
) -> None:
    resolved = {"status": "resolved", "resolved_at": at(minutes=5), "resolution_s": 300.0}
    embedded_kpi_store.insert(
        "ticket_facts",
        [
            ticket("t1", **resolved, resolved_on_first_contact=True),
            ticket("t2", **resolved, resolved_on_first_contact=True, escalation_count=2),
            ticket("t3", **resolved, dispatch_count=1, department="billing"),
            ticket("t4", status="merged", closed_at=at(minutes=10)),
            ticket("t5", status="escalated", escalation_count=1),
        ],
    )

    [row] = read_view(embedded_kpi_store, "kpi_tickets", "department, ticket_type")

    assert project(
        [row],
        "created",
        "open_backlog",
        "resolved",
        "resolved_on_first_contact",
        "first_contact_resolution_rate",
        "escalated",
        "escalation_rate",
        "dispatched",
        "merged",
    ) == [
        {
            "created": 5,
            "open_backlog": 1,  # t5; t4 was merged
            "resolved": 3,
            "resolved_on_first_contact": 2,
            "first_contact_resolution_rate": 2 / 3,  # of the resolved, not of all created
            "escalated": 2,
            "escalation_rate": 0.4,
            "dispatched": 1,
            "merged": 1,
        }
    ]


def test_time_in_each_status_counts_the_visits_begun_in_the_range(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "ticket_state_intervals",
        [
            state_visit("t1", "in_progress", at(), 100.0),
            state_visit("t2", "in_progress", at(minutes=1), 200.0),
            state_visit("t1", "in_progress", at(minutes=10), 300.0),  # t1 back in progress
            state_visit("t3", "in_progress", at(minutes=20), 400.0),
            state_visit("t4", "in_progress", at(minutes=30), None),
            state_visit("t1", "dispatched", at(minutes=5), None, version=1),
            state_visit("late", "in_progress", at(minutes=60), 10.0),
        ],
    )
    embedded_kpi_store.insert(
        "ticket_state_intervals", [state_visit("t1", "dispatched", at(minutes=5), 60.0)]
    )

    rows = read_view(embedded_kpi_store, "kpi_ticket_states", "status")

    assert rows == [
        {
            "status": "dispatched",
            "entered": 1,
            "tickets": 1,
            "open_intervals": 0,  # closed by its newer version
            "ended": 1,
            "avg_s": 60.0,
            "p90_s": 60.0,
        },
        {
            "status": "in_progress",
            "entered": 5,
            "tickets": 4,
            "open_intervals": 1,  # t4's
            "ended": 4,
            "avg_s": 250.0,  # (100 + 200 + 300 + 400) / 4
            "p90_s": 370.0,  # rank 0.9 * 3 = 2.7: 300 + 0.7 * 100
        },
    ]


def test_time_in_a_status_nobody_left_is_null(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("ticket_state_intervals", [state_visit("t1", "closed", at(), None)])

    [row] = read_view(embedded_kpi_store, "kpi_ticket_states", "status")

    assert project([row], "entered", "ended", "avg_s", "p90_s") == [
        {"entered": 1, "ended": 0, "avg_s": None, "p90_s": None}
    ]


def test_a_breach_without_a_response_counts_against_the_sla(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "ticket_facts",
        [
            ticket("t1", first_response_at=at(minutes=5), first_response_s=300.0),
            ticket("t2", first_response_breached=True, resolution_breached=True),
        ],
    )

    [row] = read_view(embedded_kpi_store, "kpi_tickets", "department, ticket_type")

    assert project([row], "first_response_sla", "resolution_sla") == [
        {"first_response_sla": 0.5, "resolution_sla": 0.0}  # 1 / 2 and 0 / 1
    ]


def test_ticket_ratios_without_a_denominator_are_null(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("ticket_facts", [ticket("t1", ticket_type="inquiry")])

    [row] = read_view(embedded_kpi_store, "kpi_tickets", "department, ticket_type")

    assert row == row | {
        "created": 1,
        "open_backlog": 1,
        "first_response_sla": None,
        "resolution_sla": None,
        "avg_first_response_s": None,
        "avg_resolution_s": None,
        "reopen_rate": None,
    }


def test_live_gauges_now_holds_the_newest_measurement(embedded_kpi_store: KpiStore) -> None:
    def gauge(queue_id: str, value: float, seconds: int) -> dict[str, Any]:
        return {
            "scope": "queue",
            "queue_id": queue_id,
            "gauge": "contacts_waiting",
            "value": value,
            "measured_at": at(seconds=seconds),
        }

    embedded_kpi_store.insert("live_gauges", [gauge("sales", 4.0, 2), gauge("support", 1.0, 1)])
    embedded_kpi_store.insert("live_gauges", [gauge("sales", 7.0, 3)])
    embedded_kpi_store.insert("live_gauges", [gauge("sales", 5.0, 1)])

    rows = embedded_kpi_store.query("SELECT * FROM live_gauges_now ORDER BY queue_id")

    assert rows == [
        {
            "scope": "queue",
            "queue_id": "sales",
            "gauge": "contacts_waiting",
            "value": 7.0,
            "measured_at": at(seconds=3),
        },
        {
            "scope": "queue",
            "queue_id": "support",
            "gauge": "contacts_waiting",
            "value": 1.0,
            "measured_at": at(seconds=1),
        },
    ]


def test_staffing_advice_now_holds_the_newest_computation(embedded_kpi_store: KpiStore) -> None:
    def advice(agents_needed: int, seconds: int) -> dict[str, Any]:
        return {
            "queue_id": "sales",
            "computed_at": at(seconds=seconds),
            "arrivals_per_hour": 120.0,
            "aht_s": 180.0,
            "sl_threshold_s": 20.0,
            "sl_target_percent": 80,
            "agents_needed": agents_needed,
            "predicted_service_level": 0.85,
            "predicted_asa_s": 6.5,
            "predicted_occupancy": 0.75,
            "agents_logged_in": 9,
        }

    embedded_kpi_store.insert("staffing_advice", [advice(8, 60)])
    embedded_kpi_store.insert("staffing_advice", [advice(7, 0)])

    assert embedded_kpi_store.query("SELECT * FROM staffing_advice_now") == [advice(8, 60)]
