"""Builders of KPI fact rows with defaults, and a reader of the parameterized KPI views, for tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from services.kpi.store import KpiStore

NINE = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
CALLER = "5e" * 32

_PARAMETER_TYPES = {
    "by": "String",
    "grain_s": "UInt32",
    "days": "UInt32",
    "from": "DateTime64(3, 'UTC')",
    "to": "DateTime64(3, 'UTC')",
}


def at(minutes: float = 0, seconds: float = 0, days: float = 0) -> datetime:
    """A time relative to 09:00 UTC on the tests' day."""
    return NINE + timedelta(days=days, minutes=minutes, seconds=seconds)


def queue_visit(contact_id: str, visit: int = 1, version: int = 1, **changes: Any) -> dict[str, Any]:
    """A contact_facts row; by default an open voice visit queued on sales at 09:00."""
    fact = {
        "fact_id": f"{contact_id}:{visit}",
        "contact_id": contact_id,
        "visit": visit,
        "queue_id": "sales",
        "channel": "voice",
        "arrival": NINE,
        "queued_at": NINE,
        "offered_at": None,
        "answered_at": None,
        "ended_at": None,
        "wait_s": 0.0,
        "talk_s": 0.0,
        "hold_s": 0.0,
        "wrap_s": 0.0,
        "outcome": "",
        "agent_id": "",
        "skill_group": "",
        "priority": 1,
        "escalation_step": 0,
        "offers": 0,
        "disposition": "",
        "resolved": False,
        "caller_hash": CALLER,
        "transferred": False,
        "callback": False,
        "vip": False,
        "version": version,
    }
    return fact | changes


def answered_visit(contact_id: str, wait_s: float = 10.0, **changes: Any) -> dict[str, Any]:
    """A queue visit agent-1 of sales-team answered wait_s after its queued_at."""
    queued_at = changes.get("queued_at", NINE)
    answered = {
        "outcome": "answered",
        "answered_at": queued_at + timedelta(seconds=wait_s),
        "wait_s": wait_s,
        "talk_s": 120.0,
        "agent_id": "agent-1",
        "skill_group": "sales-team",
    }
    return queue_visit(contact_id, **(answered | changes))


def contact_arrival(contact_id: str, outcome: str = "routed", **changes: Any) -> dict[str, Any]:
    """The visit 0 row of a contact: its arrival and IVR outcome."""
    return queue_visit(contact_id, visit=0, **({"outcome": outcome, "queued_at": None} | changes))


def state_interval(
    agent_id: str, state: str, started_at: datetime, ended_at: datetime | None, **changes: Any
) -> dict[str, Any]:
    """An agent_state_intervals row; open (version 1) when ended_at is None, else closed (version 2)."""
    interval = {
        "interval_id": f"{agent_id}:{int(started_at.timestamp() * 1000)}",
        "agent_id": agent_id,
        "state": state,
        "reason": "",
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": (ended_at - started_at).total_seconds() if ended_at else 0.0,
        "queue_id": "",
        "skill_group": "sales-team",
        "contact_id": "",
        "version": 1 if ended_at is None else 2,
    }
    return interval | changes


def offer(offer_id: str, outcome: str, offered_at: datetime = NINE, **changes: Any) -> dict[str, Any]:
    """An offer_facts row to agent-1; ringing (version 1) when outcome is '', else settled."""
    settled = outcome != ""
    fact = {
        "offer_id": offer_id,
        "contact_id": f"contact-of-{offer_id}",
        "queue_id": "sales",
        "agent_id": "agent-1",
        "offered_at": offered_at,
        "ended_at": offered_at + timedelta(seconds=8) if settled else None,
        "ring_s": 8.0 if settled else 0.0,
        "outcome": outcome,
        "version": 2 if settled else 1,
    }
    return fact | changes


def queue_settings(queue_id: str, sl_threshold_s: float, version: int = 1, **changes: Any) -> dict[str, Any]:
    settings = {
        "queue_id": queue_id,
        "name": queue_id.title(),
        "sl_threshold_s": sl_threshold_s,
        "sl_target_percent": 80,
        "short_abandon_s": 5.0,
        "skills": [queue_id],
        "version": version,
    }
    return settings | changes


def ticket(ticket_id: str, version: int = 1, **changes: Any) -> dict[str, Any]:
    """A ticket_facts row; by default an open billing complaint created at 09:00."""
    fact = {
        "ticket_id": ticket_id,
        "ticket_type": "complaint",
        "priority": 2,
        "department": "billing",
        "channel": "voice",
        "origin_contact_id": "",
        "customer_hash": CALLER,
        "issue_code": "",
        "status": "open",
        "created_at": NINE,
        "first_response_at": None,
        "first_response_due_at": None,
        "resolved_at": None,
        "resolution_due_at": None,
        "closed_at": None,
        "first_response_s": None,
        "resolution_s": None,
        "first_response_breached": False,
        "resolution_breached": False,
        "resolved_on_first_contact": False,
        "reopen_count": 0,
        "escalation_count": 0,
        "dispatch_count": 0,
        "csat_score": None,
        "outcome": "",
        "version": version,
    }
    return fact | changes


def approval_step(request_id: str, step: int = 1, version: int = 1, **changes: Any) -> dict[str, Any]:
    """An approval_step_facts row; by default an open finance step opened at 09:00."""
    fact = {
        "step_fact_id": f"{request_id}:{step}",
        "request_id": request_id,
        "ticket_id": f"ticket-of-{request_id}",
        "chain": "refund",
        "step": step,
        "department": "finance",
        "opened_at": NINE,
        "deadline_at": None,
        "decided_at": None,
        "duration_s": 0.0,
        "reminders": 0,
        "escalations": 0,
        "outcome": "",
        "version": version,
    }
    return fact | changes


def read_view(
    store: KpiStore,
    view: str,
    order_by: str,
    start: datetime = NINE,
    end: datetime = NINE + timedelta(hours=1),
    **parameters: Any,
) -> list[dict[str, Any]]:
    """Rows of a parameterized KPI view over [start, end), the server binding every argument."""
    arguments = {**parameters, "from": start, "to": end}
    bound = ", ".join(f"{name} = {{{name}:{_PARAMETER_TYPES[name]}}}" for name in arguments)
    return store.query(f"SELECT * FROM {view}({bound}) ORDER BY {order_by}", arguments)


def project(rows: Iterable[Mapping[str, Any]], *names: str) -> list[dict[str, Any]]:
    """The rows reduced to the named columns, to assert on a few KPIs at a time."""
    return [{name: row[name] for name in names} for row in rows]
