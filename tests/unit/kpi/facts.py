"""Builders of KPI fact rows with defaults, and a reader of the parameterized KPI views, for tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.kpi.store import KpiStore

NINE = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
CALLER = "5e" * 32

_PARAMETER_TYPES = {
    "by": "String",
    "grain_s": "UInt32",
    "days": "UInt32",
    "month": "Date",
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
    """A ticket_facts row; by default a new billing complaint created at 09:00."""
    fact = {
        "ticket_id": ticket_id,
        "ticket_type": "complaint",
        "priority": 2,
        "department": "billing",
        "channel": "voice",
        "origin_contact_id": "",
        "customer_hash": CALLER,
        "issue_code": "",
        "status": "new",
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
        "origin": "agent",
        "sla_rule": "complaint",
        "status_since": NINE,
        "first_response_working_s": None,
        "resolution_working_s": None,
        "redo_count": 0,
        "satisfaction": "",
    }
    return fact | changes


def approval_step(
    request_id: str, step: int = 1, version: int = 1, stint: int = 0, **changes: Any
) -> dict[str, Any]:
    """An approval_step_facts row; by default the open first stint of a refund's finance step, opened
    at 09:00 with an hour to decide."""
    fact = {
        "step_fact_id": f"{request_id}:{step}:{stint}",
        "request_id": request_id,
        "ticket_id": f"ticket-of-{request_id}",
        "kind": "refund",
        "rule": "refund-medium",
        "policy_id": "default",
        "policy_version": 1,
        "step": step,
        "step_name": "finance",
        "stint": stint,
        "department": "finance",
        "opened_at": NINE,
        "deadline_at": NINE + timedelta(hours=1),
        "paused_since": None,
        "ended_at": None,
        "duration_s": 0.0,
        "paused_s": 0.0,
        "info_requests": 0,
        "reminders": 0,
        "within_deadline": False,
        "outcome": "",
        "version": version,
    }
    return fact | changes


def closed_approval_step(
    request_id: str, outcome: str, duration_s: float, within_deadline: bool | None = None, **changes: Any
) -> dict[str, Any]:
    """An approval step stint that ended ``duration_s`` after it opened at 09:00 (no pause), in time
    when decided within its hour unless ``within_deadline`` says otherwise."""
    decided = outcome in ("approved", "rejected")
    within = decided and duration_s <= 3600 if within_deadline is None else within_deadline
    ended = {
        "outcome": outcome,
        "ended_at": NINE + timedelta(seconds=duration_s),
        "duration_s": duration_s,
        "within_deadline": within,
        "version": 3,
    }
    return approval_step(request_id, **(ended | changes))


def dispatch(ticket_id: str, dispatch_id: str = "d1", version: int = 1, **changes: Any) -> dict[str, Any]:
    """A dispatch_facts row; by default a lead dispatch to housing at 09:00, not answered yet, with a
    day to accept and five to complete."""
    fact = {
        "dispatch_fact_id": f"{ticket_id}:{dispatch_id}",
        "ticket_id": ticket_id,
        "dispatch_id": dispatch_id,
        "department": "housing",
        "role": "lead",
        "ticket_type": "complaint",
        "priority": 3,
        "category": "housing.repairs",
        "redo": False,
        "replaces_dispatch_id": "",
        "status": "dispatched",
        "dispatched_at": NINE,
        "accept_due_at": NINE + timedelta(days=1),
        "accepted_at": None,
        "accepted_on_time": False,
        "answered_at": None,
        "accept_breached": False,
        "first_due_at": NINE + timedelta(days=5),
        "due_at": NINE + timedelta(days=5),
        "completed_at": None,
        "completed_on_time": False,
        "completion_breached": False,
        "completion_working_s": None,
        "resolved": False,
        "returns": 0,
        "returns_refused": 0,
        "return_accepted": False,
        "extensions_requested": 0,
        "extensions_granted": 0,
        "extensions_refused": 0,
        "progress_reports": 0,
        "supervision_notices": 0,
        "escalated": False,
        "inside_s": 0.0,
        "inside_since": NINE,
        "ended_at": None,
        "followed_up_at": None,
        "follow_up_reached": False,
        "satisfaction": "",
        "department_at_fault": False,
        "version": version,
    }
    return fact | changes


def completed_dispatch(
    ticket_id: str, inside_s: float, on_time: bool = True, resolved: bool = True, **changes: Any
) -> dict[str, Any]:
    """A dispatch accepted within its first hour and completed ``inside_s`` after it was sent."""
    done = NINE + timedelta(seconds=inside_s)
    completed = {
        "status": "completed",
        "accepted_at": NINE + timedelta(hours=1),
        "accepted_on_time": True,
        "answered_at": NINE + timedelta(hours=1),
        "completed_at": done,
        "completed_on_time": on_time,
        "completion_breached": not on_time,
        "resolved": resolved,
        "inside_s": inside_s,
        "inside_since": None,
        "ended_at": done,
        "version": 5,
    }
    return dispatch(ticket_id, **(completed | changes))


def state_visit(
    ticket_id: str, status: str, started_at: datetime, seconds: float | None, **changes: Any
) -> dict[str, Any]:
    """A ticket_state_intervals row; open (version 1) when seconds is None."""
    interval = {
        "interval_id": f"{ticket_id}:{int(started_at.timestamp())}",
        "ticket_id": ticket_id,
        "status": status,
        "ticket_type": "complaint",
        "priority": 3,
        "started_at": started_at,
        "ended_at": started_at + timedelta(seconds=seconds) if seconds is not None else None,
        "seconds": seconds or 0.0,
        "version": 1 if seconds is None else 2,
    }
    return interval | changes


def scorecard_weights(
    version: int = 1, effective_from: date = date(2024, 1, 1), **weights: float
) -> dict[str, Any]:
    """A scorecard_weights row; by default 30% response, 35% resolution, 35% satisfaction from 2024."""
    row = {
        "version": version,
        "effective_from": effective_from,
        "response": 0.30,
        "on_time_completion": 0.0,
        "resolution": 0.35,
        "satisfaction": 0.35,
        "source": "scorecard.yaml:14",
        "loaded_at": NINE,
    }
    return row | weights


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
