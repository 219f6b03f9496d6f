"""The fault suite: each scenario hits the running system while callers and agents work, then the
facts the center recorded are checked against what happened (``faults/facts.py``).

    python load-tests/chaos.py                    # every scenario (what `make chaos` runs)
    python load-tests/chaos.py --fast             # the ones CI runs
    python load-tests/chaos.py --only broker-kill-under-load --only duplicate-requests

The system is this run's own (``faults/system.py``): a broker, the ClickHouse stand-in and the four
services as processes on loopback ports of their own, under ``.data/chaos``. Its anchor is Kafka's
transactions system test: messages copied through transactions while brokers and copiers are
hard-bounced, then no duplicates and equal sets. Here the copiers are the services, the messages a
simulated day of contacts, and the sets the facts of each contact at each place it is recorded.
The table gives, per scenario: facts expected, seen, lost, doubled, misrecorded, and the recovery.
It exits 1 if any fact is lost, doubled or misrecorded, or a scenario failed to run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from callcenter.common.v1.envelope_pb2 import EventEnvelope
from callcenter.platform.v1 import service_pb2 as operations_pb
from callcenter.platform.v1 import service_pb2_grpc as operations_grpc
from confluent_kafka import Producer
from faults.facts import Check, compare, kpi_visit_rows, read_logs
from faults.observe import Tail
from faults.system import NAMES, System
from rich.console import Console
from rich.table import Table
from simulator.driver import Endpoints, Simulation
from simulator.scenario import QueuePlan, Scenario

from services.platform.settings import DEFAULT_DATA_DIR

DAY = replace(
    Scenario(),
    seed=23,
    duration_s=45.0,
    day_s=45.0 * 24,  # the run plays one hour of the day: the morning's flat peak
    start_hour=10.0,
    peak_arrivals_per_s=1.5,
    agents=10,
    queues=(
        QueuePlan("billing", "billing", 0.5, priority=10, overflow_to="general"),
        QueuePlan("sales", "sales", 0.3, priority=20),
        QueuePlan("general", "general", 0.2, priority=5),
    ),
    callback_share=0.0,
    self_service_share=0.0,
    transfer_share=0.0,
    patience_mean_s=40.0,
    max_wait_s=30.0,
    ring_timeout_s=6.0,
)
RETRY_FOR_S = 120.0


@dataclass
class Run:
    """One scenario being played: the system, the simulation, the tail of the decisions, and what the
    fault reports of its recovery."""

    system: System
    sim: Simulation
    tail: Tail
    recovery: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.recovery.append(text)


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Callable[[Run], None]
    fast: bool = False
    at_s: float = 12.0
    duplicates: bool = False
    day: Scenario = DAY


@dataclass
class Row:
    fault: Fault
    total: Check
    checks: list[Check]
    recovery: list[str]
    error: str = ""


# The faults ---------------------------------------------------------------------------------------


def broker_kill(down_s: float) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        run.system.kill_broker()
        time.sleep(down_s)
        killed_for = time.monotonic()
        ready = run.system.start_broker()
        run.say(f"broker back in {ready - killed_for:.1f} s (JVM start and log recovery)")
        for name in ("routing", "agents", "intake", "kpi"):
            after = run.tail.first_after(name, ready)
            run.say(f"{name} {_seconds(after)} after")

    return inject


def kill_at(service: str, points: tuple[str, ...]) -> Callable[[Run], None]:
    """Restart ``service`` told to die at each point of a unit of work in turn, then measure how long
    the killed instance's successor takes to make its first decision."""

    def inject(run: Run) -> None:
        for point in points:
            run.system.restart(service, CC_FAILPOINT=f"{point}@3")
            died = _wait_exit(run.system, service, timeout_s=60)
            if died is None:
                run.say(f"{point}: never reached")
                continue
            run.system.restart(service)
            first = run.tail.first_after(service, died)
            run.say(f"{point}: first decision {_seconds(first)} after kill -9")
            time.sleep(3)

    return inject


def kill_plain(service: str) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        died = time.monotonic()
        run.system.kill(service)
        run.system.restart(service)
        serving = run.system.wait_serving(service)
        first = run.tail.first_after(service, died)
        run.say(f"serving {serving - died:.1f} s, first decision {_seconds(first)} after kill -9")

    return inject


def pause(service: str, for_s: float) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        run.system.pause(service)
        time.sleep(for_s)
        resumed = time.monotonic()
        run.system.resume(service)
        first = run.tail.first_after(service, resumed)
        run.say(f"{service} stopped {for_s:g} s; first decision {_seconds(first)} after it went on")

    return inject


def poison(run: Run) -> None:
    """A buggy or newer writer leaves records that are not events of ours in two services' own topics
    (which the others read too); both services are killed and must start again, quarantining them."""
    producer = Producer(run.system.kafka.client_config())
    envelope = EventEnvelope(
        event_id="poison-unknown-version",
        event_type="ContactStarted",
        schema_version=9,
        aggregate_type="Contact",
        aggregate_id=f"{run.sim.run_id}-poison-2",
        aggregate_version=1,
    )
    records = [
        ("contacts.events.v1", f"{run.sim.run_id}-poison-1", b"\x08\x96\x01 not an envelope", []),
        (
            "contacts.events.v1",
            envelope.aggregate_id,
            envelope.SerializeToString(),
            [("event_type", b"ContactStarted"), ("schema_version", b"9")],
        ),
        ("agents.events.v1", f"{run.sim.run_id}-poison-3", b"\xff\xfe garbage", []),
    ]
    for topic, key, value, headers in records:
        producer.produce(topic, value, key.encode(), headers=headers)
    producer.flush(10)
    for name in ("intake", "agents"):
        died = time.monotonic()
        run.system.kill(name)
        run.system.restart(name)
        serving = run.system.wait_serving(name)
        listed = _quarantined(run.system, name)
        run.say(f"{name} serving {serving - died:.1f} s after kill -9 with {listed} record(s) quarantined")


def _quarantined(system: System, name: str) -> int:
    with grpc.insecure_channel(system.address(name)) as channel:
        stub = operations_grpc.OperationsServiceStub(channel)
        records = stub.ListQuarantined(operations_pb.ListQuarantinedRequest(), timeout=10).records
    return sum(1 for r in records if not r.resolved)


def nothing(run: Run) -> None:
    run.say("every request sent twice at once")


def _twins(sim: Simulation) -> str:
    errors = sim.tally.twin_errors
    return ", ".join(f"{count} {code}" for code, count in sorted(errors.items())) or "none"


FAULTS = (
    Fault(
        "broker-kill-under-load", "kill -9 the broker for 2 s while calls flow", broker_kill(2.0), fast=True
    ),
    Fault("duplicate-requests", "every request twice, concurrently", nothing, fast=True, duplicates=True),
    Fault("kill-routing", "kill -9 routing mid-day, restart", kill_plain("routing"), fast=True),
    Fault("kill-agents", "kill -9 agents mid-day, restart", kill_plain("agents"), fast=True),
    Fault("kill-intake", "kill -9 intake mid-day, restart", kill_plain("intake"), fast=True),
    Fault("kill-kpi", "kill -9 kpi mid-day, restart", kill_plain("kpi"), fast=True),
    *(
        Fault(
            f"crash-points-{service}",
            f"kill -9 {service} before the append, before the offsets, before and after the commit",
            kill_at(service, ("before_append", "before_offsets", "before_commit", "after_commit")),
            day=replace(DAY, duration_s=75.0),
            at_s=8.0,
        )
        for service in NAMES
    ),
    Fault(
        "routing-lags",
        "routing stopped for a minute while agents and telephony go on",
        pause("routing", 60.0),
    ),
)


# Playing ------------------------------------------------------------------------------------------


def play(system: System, fault: Fault, number: int, console: Console) -> Row:
    run_id = f"x{int(time.time()) % 100000:05d}{number:02d}"
    endpoints = Endpoints(
        system.address("intake"),
        system.address("routing"),
        system.address("agents"),
        system.kafka,
        kpi=system.address("kpi"),
    )
    sim = Simulation(
        fault.day, endpoints, run_id=run_id, retry_for_s=RETRY_FOR_S, duplicate_requests=fault.duplicates
    )
    console.print(f"[bold]{fault.name}[/]: {fault.what} (run {run_id})")
    with Tail(system.kafka) as tail:
        run = Run(system, sim, tail)
        sim.setup()
        failure: list[str] = []

        def inject() -> None:
            time.sleep(fault.at_s)
            try:
                fault.inject(run)
            except Exception as error:
                failure.append(f"{type(error).__name__}: {error}")
                traceback.print_exc()

        injector = threading.Thread(target=inject, name=f"fault-{fault.name}", daemon=True)
        injector.start()
        sim.run(drain_s=90.0)
        injector.join(600)
        _all_serving(system)
        sim.teardown(timeout_s=60)
    checks = settle(system, sim, run_id)
    if fault.duplicates:
        run.say(f"the twins' errors: {_twins(sim)}")
    total = Row(fault, _total(checks), checks, run.recovery, "; ".join(failure)).total
    console.print(f"  {_summary(total)}; recovery: {'; '.join(run.recovery) or '-'}")
    for check in checks:
        for example in check.examples[:3]:
            console.print(f"    [red]{check.name} {example}")
    return Row(fault, total, checks, run.recovery, "; ".join(failure))


def settle(system: System, sim: Simulation, run_id: str, within_s: float = 90.0) -> list[Check]:
    """The facts, once the KPIs have caught up with the logs (or ``within_s`` has passed)."""
    deadline = time.monotonic() + within_s
    while True:
        logs = read_logs(system.kafka, f"{run_id}-")
        with system.clickhouse() as client:
            rows = kpi_visit_rows(client, f"{run_id}-")
        checks = compare(sim, logs, rows).checks
        kpi = next(c for c in checks if c.name == "kpi visits")
        if kpi.clean or time.monotonic() > deadline:
            return checks
        time.sleep(2.0)


def _total(checks: list[Check]) -> Check:
    total = Check("all")
    for check in checks:
        for attribute in ("expected", "seen", "lost", "doubled", "misrecorded"):
            setattr(total, attribute, getattr(total, attribute) + getattr(check, attribute))
    return total


def _all_serving(system: System) -> None:
    for name in NAMES:
        if system.exited(name) is not None:
            system.restart(name)
        system.wait_serving(name)


def _wait_exit(system: System, name: str, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if system.exited(name) is not None:
            return time.monotonic()
        time.sleep(0.02)
    return None


def _seconds(value: float | None) -> str:
    return "none within 2 min" if value is None else f"{value:.2f} s"


def _summary(check: Check) -> str:
    return (
        f"{check.expected} facts expected, {check.seen} seen, {check.lost} lost, "
        f"{check.doubled} doubled, {check.misrecorded} misrecorded"
    )


def table(rows: list[Row]) -> Table:
    result = Table(title="fault suite")
    for column in ("scenario", "expected", "seen", "lost", "doubled", "misrecorded", "recovery"):
        result.add_column(column, overflow="fold")
    for row in rows:
        t = row.total
        recovery = "; ".join(row.recovery) + (f" [red]FAILED: {row.error}" if row.error else "")
        result.add_row(
            row.fault.name,
            str(t.expected),
            str(t.seen),
            str(t.lost),
            str(t.doubled),
            str(t.misrecorded),
            recovery,
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the scenarios CI runs")
    parser.add_argument("--only", action="append", default=[], help="a scenario by name (repeatable)")
    parser.add_argument("--root", type=Path, default=DEFAULT_DATA_DIR / "chaos")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [f for f in FAULTS if (not args.only or f.name in args.only) and (f.fast or not args.fast)]
    console = Console(width=160)
    if args.list or not chosen:
        for fault in FAULTS:
            console.print(f"{fault.name}{' (fast)' if fault.fast else ''}: {fault.what}")
        return 0 if args.list else 2
    system = System(args.root)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rows: list[Row] = []
    try:
        console.print(f"starting the system under {args.root}")
        system.start()
        for number, fault in enumerate(chosen):
            try:
                rows.append(play(system, fault, number, console))
            except Exception as error:
                traceback.print_exc()
                rows.append(Row(fault, Check("all"), [], [], f"{type(error).__name__}: {error}"))
                _all_serving(system)
    finally:
        system.stop()
    console.print(table(rows))
    bad = [row for row in rows if row.error or not row.total.clean or row.total.expected == 0]
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
