"""Run the call-center simulator against the services, with a live wallboard in the terminal.

    python load-tests/simulate.py --minutes 3 --seed 7            # services already running
    python load-tests/simulate.py --start-services --minutes 5    # what `make demo` runs

The scenario is seeded: the same seed asks the system the same questions in the same order. Next to
the contacts it plays the back office: wrap-ups that open tickets, the center dispatching them to the
departments of the catalogue, each department accepting, returning, asking for more time and
completing, and the follow-up calls (``--no-back-office`` leaves the tickets service alone). At the
end it prints the outcome tally and each service's memory, and writes the ground truth of every
contact, desk and ticket (its dispatches and follow-ups) to ``--truth`` (JSON lines) for comparison
with the KPIs, and the run's intraday KPIs from the KPI service to ``--report`` (HTML: per queue, per
minute, or per 15 minutes for runs over two hours).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
from callcenter.kpi.v1 import service_pb2 as kpi_pb
from callcenter.kpi.v1 import service_pb2_grpc as kpi_grpc
from rich.console import Console
from rich.live import Live
from simulator.callers import CallerChannel
from simulator.driver import Endpoints, Simulation
from simulator.report import fetch, write_report
from simulator.scenario import Scenario
from simulator.wallboard import MemoryWatch, render

from services import launcher
from services.platform.settings import DEFAULT_DATA_DIR, Settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long callers keep arriving")
    parser.add_argument("--day-minutes", type=float, default=4.0, help="real minutes one simulated day lasts")
    parser.add_argument("--rate", type=float, default=2.0, help="arrivals per second at the peak hour")
    parser.add_argument("--agents", type=int, default=24)
    parser.add_argument("--start-services", action="store_true", help="start the local services for the run")
    parser.add_argument(
        "--no-back-office", action="store_true", help="no tickets: wrap-ups ask for none, no department acts"
    )
    parser.add_argument("--no-view", action="store_true", help="no live wallboard, just the summary")
    parser.add_argument("--truth", type=Path, default=DEFAULT_DATA_DIR / "simulator" / "truth.jsonl")
    parser.add_argument("--report", type=Path, default=DEFAULT_DATA_DIR / "simulator" / "report.html")
    parser.add_argument(
        "--forget-after-s",
        type=float,
        default=120.0,
        help="with --start-services: how long the services keep ended contacts (production: an hour)",
    )
    args = parser.parse_args()

    console = Console()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scenario = replace(
        Scenario(),
        seed=args.seed,
        duration_s=args.minutes * 60,
        day_s=args.day_minutes * 60,
        peak_arrivals_per_s=args.rate,
        agents=args.agents,
    )
    # The demo's back office also asks for sign-off: a quarter of the tickets whose dispatches are done.
    scenario = replace(scenario, back_office=replace(scenario.back_office, approval_share=0.25))
    running = []
    found = launcher.already_running() if args.start_services else {}
    if found:
        console.print(f"using the services already running ({', '.join(found)}), not starting others")
    elif args.start_services:
        running = launcher.start_all({"CC_STORE__FORGET_CLOSED_AFTER": f"PT{args.forget_after_s:g}S"})
        try:
            launcher.wait_healthy(running)
        except (RuntimeError, TimeoutError) as error:
            console.print(f"[red]{error}")
            launcher.stop_all(running)
            return 1
    addresses = launcher.addresses()
    endpoints = Endpoints(
        addresses["intake"],
        addresses["routing"],
        addresses["agents"],
        Settings().kafka,
        kpi=addresses["kpi"],
        tickets="" if args.no_back_office else addresses["tickets"],
        approvals="" if args.no_back_office else addresses["approvals"],
    )
    memory = MemoryWatch({item.service.name: item.process.pid for item in running})
    sim = Simulation(scenario, endpoints)
    console.print(
        f"scenario seed {scenario.seed}: about {scenario.expected_arrivals():.0f} callers over "
        f"{scenario.duration_s:.0f} s, {scenario.agents} agents, queues "
        + ", ".join(q.queue_id for q in scenario.queues)
    )
    began = datetime.now(UTC)
    try:
        sim.setup()
        if args.no_view:
            sim.run(stop, on_tick=lambda s: memory.sample(s.elapsed()))
        else:
            with Live(render(sim, memory), console=console, refresh_per_second=2) as live:
                sim.run(stop, on_tick=lambda s: live.update(render(s, memory)))
        final = render(sim, memory)
        sim.teardown()
        sim.write_truth(args.truth)
        report = _report(sim, began, args.report, console)
    finally:
        if running:
            launcher.stop_all(running)
    console.print(final)
    tickets = sim.backoffice.truth() if sim.backoffice is not None else []
    dispatches = sum(len(ticket["dispatches"]) for ticket in tickets)
    console.print(
        f"ground truth of {len(sim.contacts)} contacts, {len(tickets)} tickets and {dispatches} dispatches "
        f"in {args.truth}"
    )
    if report:
        console.print(f"intraday KPIs of the run in {args.report}")
    return 0


def _report(sim: Simulation, began: datetime, path: Path, console: Console) -> bool:
    """The run's intraday KPIs from the KPI service, once it has caught up with the last events."""
    if not sim.endpoints.kpi:
        return False
    threading.Event().wait(3.0)  # KPI freshness is well under a second; leave room for a slow machine
    ended = datetime.now(UTC)
    interval = (
        kpi_pb.INTERVAL_MINUTE if (ended - began).total_seconds() < 7200 else kpi_pb.INTERVAL_FIFTEEN_MINUTES
    )
    try:
        with CallerChannel(sim.endpoints.kpi) as channel:
            rows = fetch(kpi_grpc.KpiServiceStub(channel), began, ended, interval)
    except grpc.RpcError as error:
        console.print(f"[red]no KPI report: the KPI service answered {error.code().name}: {error.details()}")
        return False
    write_report(rows, f"Run {sim.run_id}: intraday KPIs per queue", path)
    return True


if __name__ == "__main__":
    sys.exit(main())
