"""First-contact resolution and satisfaction views (kpi_fcr, kpi_ticket_fcr, kpi_csat)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.kpi.store import KpiStore
from tests.unit.kpi.facts import NINE, answered_visit, at, project, queue_visit, read_view, ticket

ANSWERED_AT = at(seconds=10)  # answered_visit's default: queued at 09:00, 10 s wait


def later_contact(contact_id: str, caller: str, arrival: Any, queue_id: str = "sales") -> dict[str, Any]:
    return queue_visit(contact_id, caller_hash=caller, arrival=arrival, queued_at=arrival, queue_id=queue_id)


def fcr(store: KpiStore, days: int = 3) -> list[dict[str, Any]]:
    return read_view(store, "kpi_fcr", "queue_id", days=days)


def test_a_handled_contact_repeated_within_n_days_is_not_resolved(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("a1", caller_hash="aa" * 32),
            later_contact("a2", "aa" * 32, ANSWERED_AT + timedelta(days=2)),
            answered_visit("b1", caller_hash="bb" * 32),
            later_contact("b2", "bb" * 32, ANSWERED_AT + timedelta(days=4)),
            answered_visit("unknown1", caller_hash=""),
            later_contact("unknown2", "", ANSWERED_AT + timedelta(hours=1)),
            answered_visit("d1", caller_hash="dd" * 32),
            later_contact("d2", "dd" * 32, ANSWERED_AT + timedelta(days=1), queue_id="support"),
            queue_visit("e1", caller_hash="ee" * 32, outcome="abandoned", wait_s=40.0),
            later_contact("e2", "ee" * 32, at(minutes=5)),
        ],
    )

    rows = fcr(embedded_kpi_store, days=3)

    assert rows == [
        {
            "queue_id": "sales",
            "handled": 4,  # a1, b1, unknown1, d1; the later contacts queued after the window
            "repeats": 1,  # a1 only: b1 after 4 days, unknown1 no caller, d1 on another queue
            "fcr_rate": 0.75,  # (4 - 1) / 4
        }
    ]


def test_a_repeat_exactly_n_days_later_counts_and_a_day_later_does_not(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("a1", caller_hash="aa" * 32),
            later_contact("a2", "aa" * 32, ANSWERED_AT + timedelta(days=3)),
            answered_visit("b1", caller_hash="bb" * 32),
            later_contact("b2", "bb" * 32, ANSWERED_AT + timedelta(days=4)),
        ],
    )

    [three_days] = fcr(embedded_kpi_store, days=3)
    [four_days] = fcr(embedded_kpi_store, days=4)

    assert project([three_days, four_days], "handled", "repeats", "fcr_rate") == [
        {"handled": 2, "repeats": 1, "fcr_rate": 0.5},  # a1; b1 came back after 3 + 1 days
        {"handled": 2, "repeats": 2, "fcr_rate": 0.0},  # (2 - 2) / 2
    ]


def test_only_contacts_after_the_answer_are_repeats(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "contact_facts",
        [
            answered_visit("a1", caller_hash="aa" * 32, wait_s=60.0),
            later_contact("a0", "aa" * 32, at(seconds=30)),
        ],
    )

    [row] = fcr(embedded_kpi_store)

    assert project([row], "handled", "repeats") == [{"handled": 1, "repeats": 0}]


def test_ticket_fcr_is_the_share_resolved_on_first_contact(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "ticket_facts",
        [
            ticket("t1", resolved_on_first_contact=True),
            ticket("t2", resolved_on_first_contact=True),
            ticket("t3"),
            ticket("t4", version=2, resolved_on_first_contact=True),
            ticket("t5", department="legal"),
            ticket("early", resolved_on_first_contact=True, created_at=at(minutes=-1)),
        ],
    )
    embedded_kpi_store.insert("ticket_facts", [ticket("t4", version=1)])

    rows = read_view(embedded_kpi_store, "kpi_ticket_fcr", "department")

    assert rows == [
        {"department": "billing", "tickets": 4, "resolved_on_first_contact": 3, "ticket_fcr_rate": 0.75},
        {"department": "legal", "tickets": 1, "resolved_on_first_contact": 0, "ticket_fcr_rate": 0.0},
    ]


def test_csat_counts_scored_tickets_on_a_one_to_five_scale(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert(
        "ticket_facts",
        [
            ticket("t1", csat_score=5),
            ticket("t2", csat_score=4),
            ticket("t3", csat_score=3),
            ticket("t4", csat_score=1),
            ticket("no-survey"),
            ticket("off-scale", csat_score=0),
            ticket("late", csat_score=1, created_at=NINE + timedelta(hours=1)),
            ticket("t5", csat_score=2, department="legal"),
        ],
    )

    rows = read_view(embedded_kpi_store, "kpi_csat", "department")

    assert rows == [
        {
            "department": "billing",
            "responses": 4,
            "avg_score": 3.25,  # (5 + 4 + 3 + 1) / 4
            "csat_rate": 0.5,  # 2 scores >= 4 / 4
        },
        {"department": "legal", "responses": 1, "avg_score": 2.0, "csat_rate": 0.0},
    ]
