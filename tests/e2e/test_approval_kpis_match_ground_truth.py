"""The approval KPIs in ClickHouse against the simulator's approvers, through the real services and
broker.

A seeded day as the ticket KPIs' e2e test plays it, with the approvals service too: most tickets
need sign-off for a refund or a compensation once their dispatches are done (amounts spread over the
policy's small, medium and large ranges, so chains of one, two and three steps). The center asks
(tickets' RequestApproval), answers the approvers' questions and resolves the ticket when the
request ends; the team lead (an agent's token titled team_lead), finance and legal (their
DEPARTMENT tokens) poll ListPending and approve, reject or ask first, each after a seeded delay.
The KPI service projects approvals.events.v1; then every count of kpi_approval_steps per department,
kind and step must be the truth's, exactly, every rate the ratio of those counts, and
kpi_approvals_waiting must show none of the run's steps, as the run drains.

Times are exact, not within a latency: the simulator takes each step's opening, question and decision
at the service's own time of it (the trail's), and knows each answer's time between its sending and
its return, so a step's time in the department lies between bounds, however slow the machine. The
deadlines are hours and working days of the cn-gov calendar, so a run
of minutes escalates, expires and reminds none: every decision is within its deadline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from simulator.driver import Simulation
from simulator.scenario import BackOffice, DispositionPlan, QueuePlan, Scenario

from services.kpi.store import KpiStore
from tests.e2e.back_office import PlayedDay, eventually, keyed_by, played_day, ratio

MS = 0.001  # the resolution of DateTime64(3), at each end of a time compared

SCENARIO = replace(
    Scenario(),
    seed=41,
    duration_s=30.0,
    day_s=45.0,
    peak_arrivals_per_s=1.5,
    agents=10,
    queues=(
        QueuePlan("billing", "billing", 0.6, priority=10),
        QueuePlan("general", "general", 0.4, priority=5),
    ),
    patience_mean_s=120.0,
    callback_share=0.0,
    transfer_share=0.0,
    wrap_up_timeout_share=0.0,
    break_every_s=1e9,
    back_office=BackOffice(
        dispositions=(
            DispositionPlan("complaint", 0.5, 0.9, "complaint", ("water.billing", "environment.noise")),
            DispositionPlan("service_request", 0.5, 0.9, "service_request", ("housing.repair",)),
        ),
        dispatch_delay_s=(0.3, 1.0),
        accept_delay_s=(0.3, 1.5),
        work_s=(0.5, 2.0),
        follow_up_delay_s=(0.5, 1.5),
        return_share=0.0,
        extension_share=0.0,
        at_fault_share=0.0,
        approval_share=0.85,
        decide_delay_s=(0.3, 2.0),
        approval_reject_share=0.2,
        info_request_share=0.3,
        info_answer_delay_s=(0.3, 1.5),
    ),
)
CHAINS = {"small": ["center"], "medium": ["center", "finance"], "large": ["center", "finance", "legal"]}
RUNS_STEPS = "has({tickets:Array(String)}, ticket_id)"


class ApprovalDay:
    """The run's approvals as the center and the approvers handled them, and the day they were in."""

    def __init__(self, played: PlayedDay) -> None:
        assert played.sim.backoffice is not None
        self.played = played
        self.approvals = played.sim.backoffice.approvals_truth()
        self.tickets = played.sim.backoffice.truth()
        self.params = {**played.window, "tickets": [t["ticket_id"] for t in self.tickets]}

    def steps(self) -> list[dict[str, Any]]:
        return [{**s, "kind": a["kind"]} for a in self.approvals for s in a["steps"]]

    def view(self, name: str) -> list[dict[str, Any]]:
        return self.played.view(name)

    def query(self, sql: str) -> list[dict[str, Any]]:
        return self.played.store.query(sql, self.params)


@pytest.fixture(scope="module")
def day(kafka_broker: Any, embedded_clickhouse_dir: Any) -> Iterator[ApprovalDay]:
    """One simulated day with its approvers through the six services and the KPI projection."""
    with played_day(
        kafka_broker, embedded_clickhouse_dir, SCENARIO, settled_approvals, approvals=True
    ) as played:
        yield ApprovalDay(played)


def settled_approvals(sim: Simulation, store: KpiStore) -> None:
    """Until every step of the run's approvals is in the KPIs as the approvers left it."""
    assert sim.backoffice is not None
    steps = [s for a in sim.backoffice.approvals_truth() for s in a["steps"]]
    expected = (len(steps), sum(bool(s["outcome"]) for s in steps), sum(s["info_requests"] for s in steps))
    tickets = list(sim.backoffice.tickets)
    eventually(
        lambda: tuple(
            store.query(
                "SELECT count() AS n, countIf(outcome != '') AS ended, sum(info_requests) AS asked "
                f"FROM approval_step_facts FINAL WHERE {RUNS_STEPS}",
                {"tickets": tickets},
            )[0].values()
        ),
        lambda counts: counts == expected,
        "every approval step of the run in the KPIs as the approvers left it "
        f"(steps, ended, asked: {expected})",
    )


def _p90(values: list[float]) -> float:
    """PERCENTILE.INC's 90th percentile, as quantileExactInclusive interpolates it."""
    ordered = sorted(values)
    at = 0.9 * (len(ordered) - 1)
    lower = int(at)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (at - lower) * (ordered[upper] - ordered[lower])


def test_the_approvers_show_every_kind_of_step(day: ApprovalDay) -> None:
    approvals, steps = day.approvals, day.steps()
    assert {a["size"] for a in approvals} == set(CHAINS), Counter(a["size"] for a in approvals)
    assert {a["kind"] for a in approvals} == {"refund", "compensation"}
    assert any(s["outcome"] == "rejected" for s in steps), "no rejection"
    assert any(s["info_requests"] for s in steps), "no request for more information"
    assert any(a["status"] == "granted" and len(a["steps"]) == 3 for a in approvals), "no granted large one"
    assert {s["department"] for s in steps} == {"center", "finance", "legal"}
    # The run drains: every request ended, and its ticket was resolved and closed after it.
    assert all(a["status"] in ("granted", "rejected") for a in approvals), Counter(
        a["status"] for a in approvals
    )
    assert all(t["phase"] == "closed" for t in day.tickets), Counter(t["phase"] for t in day.tickets)
    print("approvals", Counter((a["size"], a["status"]) for a in approvals))


def test_each_chain_is_the_policys_for_its_amount(day: ApprovalDay) -> None:
    for approval in day.approvals:
        departments = [s["department"] for s in approval["steps"]]
        outcomes = [s["outcome"] for s in approval["steps"]]
        chain = CHAINS[approval["size"]]
        assert [s["index"] for s in approval["steps"]] == list(range(len(departments)))
        if approval["status"] == "granted":
            assert departments == chain and set(outcomes) == {"approved"}, approval
        else:
            assert departments == chain[: len(departments)], approval
            assert outcomes == ["approved"] * (len(outcomes) - 1) + ["rejected"], approval


def test_steps_by_department_kind_and_step_are_counted_once(day: ApprovalDay) -> None:
    kpis = keyed_by(day.view("kpi_approval_steps"), "department", "kind", "step")
    truth: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for step in day.steps():
        truth.setdefault((step["department"], step["kind"], step["index"]), []).append(step)
    assert set(kpis) == set(truth)
    for key, mine in truth.items():
        got = kpis[key]
        approved = sum(s["outcome"] == "approved" for s in mine)
        rejected = sum(s["outcome"] == "rejected" for s in mine)
        decided = approved + rejected
        assert got["steps"] == len(mine), key
        assert got["open_steps"] == sum(not s["outcome"] for s in mine), key
        assert got["decided"] == decided, key
        assert got["approved"] == approved and got["rejected"] == rejected, key
        assert got["info_requests"] == sum(s["info_requests"] for s in mine), key
        assert got["approval_rate"] == ratio(approved, decided), key
        # Deadlines of hours and working days, a run of minutes: nothing escalates or expires, the
        # center withdraws nothing, and every decision is within its deadline.
        assert got["escalated"] == 0 and got["expired"] == 0 and got["withdrawn"] == 0, key
        assert got["decided_within_deadline"] == decided, key
        assert got["within_deadline_rate"] == ratio(decided, decided), key
        # Each closed step's time is known between bounds (its pauses'); the mean and the percentile,
        # rising in each value, lie between theirs (1 ms for each DateTime64(3) end).
        low = [s["duration_s"] for s in mine if s["outcome"]]
        high = [s["duration_max_s"] for s in mine if s["outcome"]]
        if low:
            assert sum(low) / len(low) - MS <= got["avg_duration_s"] <= sum(high) / len(high) + MS, key
            assert _p90(low) - MS <= got["p90_duration_s"] <= _p90(high) + MS, key
        else:
            assert got["avg_duration_s"] is None and got["p90_duration_s"] is None, key


def test_the_time_waiting_on_information_is_not_time_in_the_department(day: ApprovalDay) -> None:
    facts = {
        (row["request_id"], row["step"]): row
        for row in day.query(
            "SELECT request_id, step, paused_s, info_requests FROM approval_step_facts FINAL "
            f"WHERE {RUNS_STEPS}"
        )
    }
    asked = [(a["approval_id"], s) for a in day.approvals for s in a["steps"] if s["info_requests"]]
    assert asked
    for approval_id, step in asked:
        got = facts[(approval_id, step["index"])]
        assert got["info_requests"] == step["info_requests"]
        # The service recorded the answer between its sending and its return.
        assert step["paused_min_s"] - MS <= got["paused_s"] <= step["paused_s"] + MS, (got, step)


def test_no_step_of_the_run_waits_when_it_drains(day: ApprovalDay) -> None:
    # Other tests of the session may leave open steps of their own in the store: those stay as they are.
    others = {
        row["department"]: row
        for row in day.query(
            "SELECT toString(department) AS department, count() AS waiting, "
            "countIf(paused_since IS NOT NULL) AS waiting_on_info FROM approval_step_facts FINAL "
            f"WHERE outcome = '' AND NOT {RUNS_STEPS} GROUP BY department"
        )
    }
    open_steps = Counter(s["department"] for s in day.steps() if not s["outcome"])
    waiting = keyed_by(day.played.store.query("SELECT * FROM kpi_approvals_waiting"), "department")
    assert set(waiting) == set(others) | set(open_steps)
    for code, got in waiting.items():
        assert got["waiting"] == open_steps[code] + (others[code]["waiting"] if code in others else 0), code
