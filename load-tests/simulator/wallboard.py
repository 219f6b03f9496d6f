"""The live terminal view of a running simulation: queues, agents per state, KPIs, outcomes, memory.

Queue figures come from routing's GetQueueStatus and agent states from agents' ListAgents, the same
APIs a supervisor's tool would use; the KPI table from the KPI service's Wallboard and StaffingAdvice
(the numbers Grafana shows); the back office's tickets and each department's dispatches per state from
tickets' ListTickets and ListDispatches; outcomes are the simulator's own tally.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.kpi.v1 import service_pb2 as kpi_pb
from callcenter.routing.v1 import service_pb2 as routing_pb
from rich.console import Group
from rich.table import Table

from simulator.driver import Simulation


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process, from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class MemoryWatch:
    """Each service's resident memory over the run: first sample after warm-up, latest, highest."""

    pids: dict[str, int]
    warm_up_s: float = 30.0
    first: dict[str, float] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)

    def sample(self, elapsed_s: float) -> None:
        for name, pid in self.pids.items():
            value = rss_mib(pid)
            if value is None:
                continue
            self.latest[name] = value
            self.peak[name] = max(value, self.peak.get(name, 0.0))
            if elapsed_s >= self.warm_up_s and name not in self.first:
                self.first[name] = value


def _seconds(duration) -> str:
    return f"{duration.seconds + duration.nanos / 1e9:.0f}s"


def kpi_table(sim: Simulation) -> Table:
    """Today per queue from the KPI service: offered, abandoned, service level, staffing advice."""
    table = Table(title="KPIs today (kpi service)", expand=True)
    for column in ("queue", "offered", "abandoned", "SL today", "waiting", "agents needed", "logged in"):
        table.add_column(column, justify="right" if column != "queue" else "left")
    assert sim.kpis is not None
    try:
        board = sim.kpis.Wallboard(kpi_pb.WallboardRequest(), timeout=2)
        advice = sim.kpis.StaffingAdvice(kpi_pb.StaffingAdviceRequest(), timeout=2).advice
    except grpc.RpcError as error:
        table.add_row(f"[red]{error.code().name}", *[""] * 6)
        return table
    needed = {item.queue_id: item for item in advice}
    for queue in board.queues:
        staffing = needed.get(queue.queue_id)
        table.add_row(
            queue.queue_id,
            str(queue.offered_today),
            str(queue.abandoned_today),
            f"{queue.service_level_today:.0%}",
            str(queue.waiting),
            str(staffing.agents_needed) if staffing else "-",
            str(staffing.agents_logged_in) if staffing else "-",
        )
    return table


DISPATCH_STATES = ("dispatched", "accepted", "returned", "completed", "withdrawn")


def back_office_table(sim: Simulation) -> Table:
    """The run's tickets by status and each department's dispatches by state, from the tickets service."""
    assert sim.backoffice is not None
    table = Table(title="back office (tickets service)", expand=True)
    table.add_column("department")
    for column in DISPATCH_STATES:
        table.add_column(column, justify="right")
    try:
        tickets, departments = sim.backoffice.board()
    except grpc.RpcError as error:
        table.add_row(f"[red]{error.code().name}", *[""] * len(DISPATCH_STATES))
        return table
    for code, states in sorted(departments.items()):
        table.add_row(code, *(str(states.get(state, 0)) for state in DISPATCH_STATES))
    done = ("resolved", "closed", "merged")
    open_now = sum(n for status, n in tickets.items() if status not in done)
    table.caption = f"tickets: {open_now} open; " + ", ".join(
        f"{status} {n}" for status, n in sorted(tickets.items())
    )
    return table


def render(sim: Simulation, memory: MemoryWatch | None = None) -> Group:
    s = sim.scenario
    elapsed = sim.elapsed()
    hour = (s.start_hour + 24.0 * elapsed / s.day_s) % 24
    header = Table.grid(padding=(0, 2))
    header.add_row(
        f"[bold]run {sim.run_id}[/] seed {s.seed}",
        f"{elapsed:5.0f}/{s.duration_s:.0f} s",
        f"simulated {int(hour):02d}:{int(hour % 1 * 60):02d}",
        f"arrivals {s.rate_at(min(elapsed, s.duration_s)):.1f}/s",
    )

    queues = Table(title="queues", expand=True)
    for column in (
        "queue",
        "waiting",
        "ringing",
        "longest wait",
        "est. wait",
        "agents",
        "ready",
        "callbacks",
    ):
        queues.add_column(column, justify="right" if column != "queue" else "left")
    for plan in s.queues:
        try:
            status = sim.routing.GetQueueStatus(
                routing_pb.GetQueueStatusRequest(queue_id=plan.queue_id), timeout=2
            ).status
        except grpc.RpcError as error:
            queues.add_row(plan.queue_id, f"[red]{error.code().name}")
            continue
        queues.add_row(
            plan.queue_id,
            str(status.waiting),
            str(status.ringing),
            _seconds(status.longest_wait),
            _seconds(status.estimated_wait) if status.HasField("estimated_wait") else "-",
            str(status.agents_logged_in),
            str(status.agents_ready),
            str(status.callbacks_pending),
        )

    states: Counter[str] = Counter()
    try:
        for agent in sim.desktops.ListAgents(agents_pb.ListAgentsRequest(), timeout=2).agents:
            if agent.agent_id.startswith(sim.run_id):
                name = agent_ev.AgentState.Name(agent.state).removeprefix("AGENT_STATE_").lower()
                if agent.state == agent_ev.AgentState.AGENT_STATE_NOT_READY:
                    reason = agent_ev.NotReadyReason.Name(agent.reason).removeprefix("NOT_READY_REASON_")
                    name += f" ({reason.lower()})"
                states[name] += 1
    except grpc.RpcError as error:
        states[f"unavailable: {error.code().name}"] += 1
    agents = Table(title="agents")
    agents.add_column("state")
    agents.add_column("agents", justify="right")
    for name, count in sorted(states.items()):
        agents.add_row(name, str(count))

    tally = sim.tally
    outcomes = Table(title="contacts")
    outcomes.add_column("what")
    outcomes.add_column("count", justify="right")
    open_now = sum(1 for c in sim.contacts.values() if not c.outcome)
    for label, value in (
        ("arrived", tally.arrivals),
        ("in the center now", open_now),
        ("offers made", tally.offers),
        *sorted(tally.outcomes.items()),
        ("gRPC calls", tally.calls),
        *((f"refused: {code.lower()}", n) for code, n in sorted(tally.errors.items())),
    ):
        outcomes.add_row(label, str(value))

    side_by_side = Table.grid(padding=(0, 4))
    side_by_side.add_row(agents, outcomes)
    parts: list = [header, queues]
    if sim.kpis is not None:
        parts.append(kpi_table(sim))
    parts.append(side_by_side)
    if sim.backoffice is not None:
        parts.append(back_office_table(sim))
    if memory is not None:
        memory.sample(elapsed)
        table = Table(title="service memory (RSS, MiB)", expand=True)
        for column in ("service", "after warm-up", "now", "peak"):
            table.add_column(column, justify="right" if column != "service" else "left")
        for name in memory.pids:
            table.add_row(
                name,
                f"{memory.first[name]:.0f}" if name in memory.first else "-",
                f"{memory.latest.get(name, 0):.0f}",
                f"{memory.peak.get(name, 0):.0f}",
            )
        parts.append(table)
    return Group(*parts)
