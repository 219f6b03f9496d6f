"""Approval views (kpi_approval_steps, kpi_approvals_waiting) on approval_step_facts rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.kpi.store import KpiStore
from tests.unit.kpi.facts import approval_step, at, closed_approval_step, read_view

NULLS = {
    "within_deadline_rate": None,
    "avg_duration_s": None,
    "p90_duration_s": None,
    "approval_rate": None,
}


def test_approval_steps_turnaround_outcomes_and_deadlines_per_department_kind_and_step(
    embedded_kpi_store: KpiStore,
) -> None:
    embedded_kpi_store.insert(
        "approval_step_facts",
        [
            closed_approval_step("a1", "approved", 100.0, info_requests=1, paused_s=50.0),
            closed_approval_step("a2", "approved", 200.0),
            closed_approval_step("a3", "approved", 300.0, within_deadline=False),
            closed_approval_step("a4", "rejected", 400.0),
            closed_approval_step("a5", "expired", 500.0),
            closed_approval_step("a6", "escalated", 600.0),
            closed_approval_step("a7", "withdrawn", 700.0),
            approval_step("a8", info_requests=2, paused_since=at(minutes=5)),
            # a6's backup, in legal, opened when a6's deadline passed
            closed_approval_step(
                "a6", "approved", 60.0, stint=1, department="legal", opened_at=at(minutes=10)
            ),
            approval_step("c1", kind="compensation"),
            closed_approval_step("late", "approved", 100.0, opened_at=at(minutes=60)),
            closed_approval_step("early", "approved", 100.0, opened_at=at(seconds=-1)),
        ],
    )
    # An older version of a1 arriving after the newer one: FINAL keeps the newer.
    embedded_kpi_store.insert("approval_step_facts", [approval_step("a1", version=1)])

    rows = read_view(embedded_kpi_store, "kpi_approval_steps", "department, kind, step")

    assert rows == [
        {
            "department": "finance",
            "kind": "compensation",
            "step": 1,
            "steps": 1,
            "open_steps": 1,
            "decided": 0,
            "approved": 0,
            "rejected": 0,
            "escalated": 0,
            "expired": 0,
            "withdrawn": 0,
            "decided_within_deadline": 0,
            "info_requests": 0,
            **NULLS,
        },
        {
            "department": "finance",
            "kind": "refund",
            "step": 1,
            "steps": 8,
            "open_steps": 1,  # a8; a1's open version 1 is older
            "decided": 4,  # approved or rejected
            "approved": 3,
            "rejected": 1,
            "escalated": 1,
            "expired": 1,
            "withdrawn": 1,
            "decided_within_deadline": 3,  # a1, a2, a4; a3 was late
            "within_deadline_rate": 0.75,
            "avg_duration_s": 400.0,  # (100 + 200 + ... + 700) / 7 closed stints
            "p90_duration_s": 640.0,  # rank 0.9 * (7 - 1) = 5.4: 600 + 0.4 * (700 - 600)
            "approval_rate": 0.75,  # 3 / 4
            "info_requests": 3,  # a1's 1 and a8's 2
        },
        {
            "department": "legal",
            "kind": "refund",
            "step": 1,
            "steps": 1,
            "open_steps": 0,
            "decided": 1,
            "approved": 1,
            "rejected": 0,
            "escalated": 0,
            "expired": 0,
            "withdrawn": 0,
            "decided_within_deadline": 1,
            "within_deadline_rate": 1.0,
            "avg_duration_s": 60.0,
            "p90_duration_s": 60.0,
            "approval_rate": 1.0,
            "info_requests": 0,
        },
    ]


def test_approval_steps_columns_have_the_contracts_names_in_order(embedded_kpi_store: KpiStore) -> None:
    embedded_kpi_store.insert("approval_step_facts", [approval_step("a1")])

    [row] = read_view(embedded_kpi_store, "kpi_approval_steps", "department")

    assert list(row) == [
        "department",
        "kind",
        "step",
        "steps",
        "open_steps",
        "decided",
        "approved",
        "rejected",
        "escalated",
        "expired",
        "withdrawn",
        "decided_within_deadline",
        "within_deadline_rate",
        "avg_duration_s",
        "p90_duration_s",
        "approval_rate",
        "info_requests",
    ]


def test_approvals_waiting_counts_open_stints_now_per_department(embedded_kpi_store: KpiStore) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    embedded_kpi_store.insert(
        "approval_step_facts",
        [
            approval_step("w1"),  # its hour ran out long ago: overdue
            approval_step("w2", paused_since=at(minutes=30), opened_at=at(minutes=-30)),  # on info
            approval_step("w3", deadline_at=tomorrow, opened_at=at(minutes=20)),
            approval_step("w4", deadline_at=None),
            closed_approval_step("done", "approved", 100.0, opened_at=at(minutes=-60)),
            approval_step("l1", department="legal", opened_at=at(days=-1)),
            closed_approval_step("l2", "escalated", 3600.0, department="legal", opened_at=at(days=-2)),
            closed_approval_step("gone", "approved", 100.0, department="it"),
        ],
    )
    # An older, open version of a stint that ended since: not waiting.
    embedded_kpi_store.insert("approval_step_facts", [approval_step("done", opened_at=at(minutes=-60))])

    rows = embedded_kpi_store.query("SELECT * FROM kpi_approvals_waiting ORDER BY department")

    assert rows == [
        {
            "department": "finance",
            "waiting": 4,
            "waiting_on_info": 1,
            "overdue": 1,  # w1; w2 is paused, w3 has until tomorrow, w4 has no deadline
            "oldest_opened_at": at(minutes=-30),
        },
        {
            "department": "legal",
            "waiting": 1,
            "waiting_on_info": 0,
            "overdue": 1,
            "oldest_opened_at": at(days=-1),
        },
    ]
