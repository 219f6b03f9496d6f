"""The ticket and department KPIs in ClickHouse against the simulator's back office, through the real
services and broker.

A seeded scenario drives intake, routing and agents over gRPC as the contacts' e2e test does, and
its back office drives the tickets service: wrap-ups that ask for a ticket (which the tickets
service opens from WrapUpCompleted), the center dispatching each by the catalogue, reviewing
returns (re-dispatching them) and extensions (granting them), resolving and recording the
follow-up call; each department, with its own DEPARTMENT token, accepting, reporting progress,
returning, asking for more time and completing. The KPI service projects tickets.events.v1 into the
embedded ClickHouse engine; then every count of kpi_tickets and kpi_departments must be the
truth's, exactly, and every rate the ratio of those counts.

Times cannot match exactly: the simulator stamps a dispatch when it hears it made and its end when
it hears the return or completion accepted, the service when it decides, up to ``HOP_S`` apart.
The SLA clocks run in working days on the departments' calendar, so a run of minutes breaches none:
every answer is on time and none is overdue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pytest
from simulator.driver import Simulation
from simulator.scenario import BackOffice, DispositionPlan, QueuePlan, Scenario

from services.kpi.store import KpiStore
from tests.e2e.back_office import (
    HOP_S,
    RUNS_TICKETS,
    PlayedDay,
    eventually,
    keyed_by,
    moment,
    played_day,
    ratio,
)

SCENARIO = replace(
    Scenario(),
    seed=23,
    duration_s=40.0,
    day_s=60.0,
    peak_arrivals_per_s=1.5,
    agents=10,
    queues=(
        QueuePlan("billing", "billing", 0.5, priority=10, overflow_to="general"),
        QueuePlan("sales", "sales", 0.3, priority=20),
        QueuePlan("general", "general", 0.2, priority=5),
    ),
    patience_mean_s=60.0,
    transfer_share=0.05,
    wrap_up_timeout_share=0.05,
    back_office=BackOffice(
        dispositions=(
            DispositionPlan("resolved", 0.4, 0.3, "inquiry", ("it.account_access", "transport.taxi")),
            DispositionPlan(
                "complaint", 0.3, 0.9, "complaint", ("environment.noise", "water.billing", "legal.dispute")
            ),
            DispositionPlan(
                "service_request", 0.3, 0.9, "service_request", ("housing.repair", "water.outage")
            ),
        ),
        return_share=0.3,
        extension_share=0.3,
        unresolved_share=0.15,
        satisfaction=(("satisfied", 0.4), ("basically_satisfied", 0.3), ("dissatisfied", 0.3)),
        at_fault_share=0.7,
    ),
)


@dataclass(frozen=True)
class BackOfficeDay:
    """The run's tickets as the simulator's back office handled them, and the day they were played in."""

    tickets: list[dict[str, Any]]
    played: PlayedDay

    @property
    def board(self) -> tuple[Counter[str], dict[str, Counter[str]]]:
        return self.played.board

    def dispatches(self) -> list[dict[str, Any]]:
        return [{**d, "ticket_type": t["ticket_type"]} for t in self.tickets for d in t["dispatches"]]

    def follow_ups(self) -> list[dict[str, Any]]:
        return [f for t in self.tickets for f in t["follow_ups"]]

    def view(self, name: str) -> list[dict[str, Any]]:
        return self.played.view(name)

    def query(self, sql: str) -> list[dict[str, Any]]:
        return self.played.query(sql)


@pytest.fixture(scope="module")
def day(kafka_broker: Any, embedded_clickhouse_dir: Any) -> Iterator[BackOfficeDay]:
    """One simulated day with its back office through the five services and the KPI projection."""
    with played_day(kafka_broker, embedded_clickhouse_dir, SCENARIO, settled_tickets) as played:
        assert played.sim.backoffice is not None
        yield BackOfficeDay(played.sim.backoffice.truth(), played)


def settled_tickets(sim: Simulation, store: KpiStore) -> None:
    """Until every ticket and dispatch of the run is in the KPIs as the back office left it."""
    assert sim.backoffice is not None
    expected = _fingerprint_of(sim.backoffice.truth())
    eventually(
        lambda: _settled(store, sim.run_id),
        lambda counts: counts == expected,
        "every ticket and dispatch of the run in the KPIs as the back office left it "
        f"(tickets, closed, dispatches, completed, withdrawn, judged: {expected})",
    )


def _fingerprint_of(tickets: list[dict[str, Any]]) -> tuple[int, ...]:
    dispatches = [d for t in tickets for d in t["dispatches"]]
    return (
        len(tickets),
        sum(t["phase"] == "closed" for t in tickets),
        len(dispatches),
        sum(d["completed"] for d in dispatches),
        sum(d["withdrawn"] for d in dispatches),
        sum(len(t["follow_ups"]) for t in tickets),
    )


def _settled(store: KpiStore, run_id: str) -> tuple[int, ...]:
    [tickets] = store.query(
        "SELECT count() AS n, countIf(status = 'closed') AS closed FROM ticket_facts FINAL "
        "WHERE startsWith(origin_contact_id, {run:String})",
        {"run": run_id},
    )
    [dispatches] = store.query(
        f"""SELECT count() AS n, countIf(status = 'completed') AS completed,
                   countIf(status = 'withdrawn') AS withdrawn, countIf(satisfaction != '') AS judged
            FROM dispatch_facts FINAL WHERE {RUNS_TICKETS}""",
        {"run": run_id},
    )
    return (
        tickets["n"],
        tickets["closed"],
        dispatches["n"],
        dispatches["completed"],
        dispatches["withdrawn"],
        dispatches["judged"],
    )


def test_the_back_office_shows_every_kind_of_ticket_step(day: BackOfficeDay) -> None:
    dispatches = day.dispatches()
    assert len({t["ticket_type"] for t in day.tickets}) > 1
    assert any(d["role"] == "assisting" for d in dispatches), "no assisting department"
    assert any(d["withdrawn"] and d["returned"] for d in dispatches), "no return reviewed"
    assert any(d["redispatch"] for d in dispatches), "no re-dispatch"
    assert any(d["extension_granted"] for d in dispatches), "no extension granted"
    assert any(d["redo"] for d in dispatches), "no redo after a dissatisfied follow-up"
    assert any(d["completed"] and not d["resolved"] for d in dispatches), "every completion solved it"
    verdicts = Counter(f["satisfaction"] for f in day.follow_ups())
    assert set(verdicts) == {"satisfied", "basically_satisfied", "dissatisfied"}, verdicts
    assert all(t["phase"] == "closed" for t in day.tickets), Counter(t["phase"] for t in day.tickets)


def _department_of(ticket: dict[str, Any]) -> str:
    """kpi_tickets' department: the newest lead dispatch whose return was not accepted."""
    leads = [d for d in ticket["dispatches"] if d["role"] == "lead" and not d["withdrawn"]]
    return leads[-1]["department"] if leads else ""


def test_tickets_by_department_and_type_are_counted_once(day: BackOfficeDay) -> None:
    kpis = keyed_by(day.view("kpi_tickets"), "department", "ticket_type")
    truth: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ticket in day.tickets:
        truth.setdefault((_department_of(ticket), ticket["ticket_type"]), []).append(ticket)
    assert set(kpis) == set(truth)
    for key, mine in truth.items():
        got = kpis[key]
        resolved = sum(t["resolutions"] > 0 for t in mine)
        reopened = sum(t["reopened"] > 0 for t in mine)
        assert got["created"] == len(mine), key
        assert got["dispatched"] == sum(t["dispatched"] for t in mine), key
        assert got["open_backlog"] == sum(t["phase"] not in ("resolved", "closed") for t in mine), key
        assert got["resolved"] == resolved, key
        assert got["reopened"] == reopened, key
        assert got["reopen_rate"] == ratio(reopened, resolved), key
        assert got["merged"] == 0 and got["escalated"] == 0, key
        # Resolved minutes after creation against SLA clocks in working days: in time, every one.
        assert got["resolution_sla"] == (1.0 if resolved else None), key


def test_dispatches_returns_extensions_and_completions_per_department_match(day: BackOfficeDay) -> None:
    kpis = keyed_by(day.view("kpi_departments"), "department")
    truth: dict[str, list[dict[str, Any]]] = {}
    for dispatch in day.dispatches():
        truth.setdefault(dispatch["department"], []).append(dispatch)
    assert set(kpis) == set(truth)
    for code, mine in truth.items():
        got = kpis[code]
        count = partial(lambda name, rows: sum(bool(d[name]) for d in rows), rows=mine)
        completed, returned, extended = count("completed"), count("returned"), count("extension_requested")
        assert got["dispatches"] == len(mine), code
        assert got["lead_dispatches"] == sum(d["role"] == "lead" for d in mine), code
        assert got["open_dispatches"] == sum(not (d["completed"] or d["withdrawn"]) for d in mine), code
        assert got["completed"] == completed, code
        assert got["resolved"] == sum(d["completed"] and d["resolved"] for d in mine), code
        assert got["returned"] == returned and got["withdrawn"] == count("withdrawn"), code
        assert got["extension_requested"] == extended, code
        assert got["extensions_granted"] == count("extension_granted"), code
        assert got["redone"] == count("redo"), code
        assert got["resolution_rate"] == ratio(got["resolved"], completed), code
        assert got["return_rate"] == ratio(returned, len(mine)), code
        assert got["extension_rate"] == ratio(extended, len(mine)), code
        # Deadlines in working days, a run in minutes: every answer and completion is on time.
        answered = sum(d["accepted"] or d["returned"] for d in mine)
        assert got["accepted_on_time"] == answered and got["acceptance_due"] == answered, code
        assert got["completed_on_time"] == completed and got["completion_due"] == completed, code
        assert got["supervised"] == 0 and got["escalated"] == 0, code
        ended = [
            (moment(d["left_at"]) - moment(d["sent_at"])).total_seconds()
            for d in mine
            if d["completed"] or d["withdrawn"]
        ]
        if ended:
            assert got["avg_inside_s"] == pytest.approx(sum(ended) / len(ended), abs=2 * HOP_S), code


def test_follow_ups_by_satisfaction_are_the_citizens_verdicts(day: BackOfficeDay) -> None:
    kpis = keyed_by(day.view("kpi_departments"), "department")
    judged: dict[str, Counter[str]] = {}
    for follow_up in day.follow_ups():
        judged.setdefault(follow_up["department"], Counter())[follow_up["satisfaction"]] += 1
    for code, got in kpis.items():
        verdicts = judged.get(code, Counter())
        follow_ups = sum(verdicts.values())
        satisfied = verdicts["satisfied"] + verdicts["basically_satisfied"]
        assert got["follow_ups"] == follow_ups, code
        assert got["satisfied"] == satisfied, code
        assert got["satisfaction_rate"] == ratio(satisfied, follow_ups), code
    facts = {
        row["dispatch_id"]: row
        for row in day.query(
            "SELECT dispatch_id, satisfaction, department_at_fault FROM dispatch_facts FINAL "
            f"WHERE satisfaction != '' AND {RUNS_TICKETS}"
        )
    }
    truth = {f["dispatch_id"]: f for f in day.follow_ups()}
    assert set(facts) == set(truth)
    for dispatch_id, follow_up in truth.items():
        assert facts[dispatch_id]["satisfaction"] == follow_up["satisfaction"]
        assert facts[dispatch_id]["department_at_fault"] == follow_up["department_at_fault"]
    scores = {
        row["origin_contact_id"]: row["csat_score"]
        for row in day.query(
            """SELECT origin_contact_id, csat_score FROM ticket_facts FINAL
               WHERE startsWith(origin_contact_id, {run:String})"""
        )
    }
    for ticket in day.tickets:
        newest = ticket["follow_ups"][-1]["csat"] if ticket["follow_ups"] else None
        assert scores[ticket["contact_id"]] == newest, ticket["ticket_id"]


def test_the_wallboard_panel_shows_the_dispatches_the_back_office_left(
    day: BackOfficeDay,
) -> None:
    tickets, departments = day.board
    assert sum(tickets.values()) == len(day.tickets)
    truth: dict[str, Counter[str]] = {}
    for d in day.dispatches():
        state = (
            "withdrawn"
            if d["withdrawn"]
            else "completed"
            if d["completed"]
            else "returned"
            if d["returned"]
            else "accepted"
            if d["accepted"]
            else "dispatched"
        )
        truth.setdefault(d["department"], Counter())[state] += 1
    assert departments == truth
    print("tickets", dict(tickets), "dispatches", {code: dict(states) for code, states in truth.items()})
    print("follow-ups", Counter(f["satisfaction"] for f in day.follow_ups()))
