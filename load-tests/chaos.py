"""The fault suite: each scenario hits the running system while callers and agents work, then the
facts the center recorded are checked against what happened (``faults/facts.py``).

    python load-tests/chaos.py                    # every scenario (what `make chaos` runs)
    python load-tests/chaos.py --fast             # the ones CI runs
    python load-tests/chaos.py --only broker-kill-under-load --only duplicate-requests

The system is this run's own (``faults/system.py``): a broker, the ClickHouse stand-in and the six
services as processes on loopback ports of their own, under ``.data/chaos``. Its anchor is Kafka's
transactions system test: messages copied through transactions while brokers and copiers are
hard-bounced, then no duplicates and equal sets. Here the copiers are the services, the messages a
simulated day of contacts, and the sets the facts of each contact at each place it is recorded.
The tickets scenarios also play tickets (``faults/tickets.py``): created, dispatched to departments,
accepted and completed, each fact checked on the tickets' topic, the public topic and the inboxes.
The approvals scenarios play approvals (``faults/approvals.py``): asked for by tickets and directly,
decided step by step by each step's deciders, each fact checked on the approvals' topic, the public
topic, the inboxes and the tickets that asked.
The table gives, per scenario: facts expected, seen, lost, doubled, misrecorded, and the recovery.
It exits 1 if any fact is lost, doubled or misrecorded, or a scenario failed to run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.agents.v1 import service_pb2_grpc as agents_grpc
from callcenter.approvals.v1 import service_pb2 as approvals_pb
from callcenter.approvals.v1 import service_pb2_grpc as approvals_grpc
from callcenter.common.v1.envelope_pb2 import EventEnvelope
from callcenter.intake.v1 import service_pb2 as intake_pb
from callcenter.intake.v1 import service_pb2_grpc as intake_grpc
from callcenter.platform.v1 import service_pb2 as operations_pb
from callcenter.platform.v1 import service_pb2_grpc as operations_grpc
from callcenter.routing.v1 import events_pb2 as routing_ev
from callcenter.routing.v1 import service_pb2 as routing_pb
from callcenter.routing.v1 import service_pb2_grpc as routing_grpc
from callcenter.tickets.v1 import service_pb2 as tickets_pb
from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from faults import approvals as approval_faults
from faults.approvals import ApprovalDesk, compare_approvals, read_approvals
from faults.facts import Check, compare, kpi_visit_rows, read_logs
from faults.observe import Tail
from faults.system import NAMES, System
from faults.tickets import (
    Poison,
    TicketDesk,
    compare_tickets,
    dead_letters,
    read_tickets,
    reasons,
)
from faults.tickets import write_poison as write_tickets_poison
from rich.console import Console
from rich.table import Table
from simulator.callers import CallerChannel
from simulator.driver import Endpoints, Simulation
from simulator.measure import CpuShares, describe, percentile
from simulator.scenario import QueuePlan, Scenario, steady

from services.platform import broker
from services.platform.settings import DEFAULT_DATA_DIR, GrpcSettings, KafkaSettings
from services.platform.topics import ensure_topics, load_topic_specs

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
# The tickets scenarios: a few dozen tickets over a lighter day of calls, which goes on beside them.
TICKETS = 36
TICKETS_DAY = replace(DAY, duration_s=60.0, peak_arrivals_per_s=0.6)
# The approvals scenarios: a few dozen approvals (three in five asked for by tickets) over the same day.
APPROVALS = 30
APPROVALS_DAY = TICKETS_DAY
FAST_DAY_S = 30.0
GRACE_S = GrpcSettings().grace_period_s  # what each service is given to stop on SIGTERM


@dataclass
class Run:
    """One scenario being played: the system, the simulation, the tail of the decisions, and what the
    fault reports of its recovery."""

    system: System
    sim: Simulation
    tail: Tail
    recovery: list[str] = field(default_factory=list)
    # The day as the load generator (this process) lived it: wall time and its own CPU time; and
    # the CPU each process of the system used meanwhile, as a share of one core.
    wall_s: float = 0.0
    cpu_s: float = 0.0
    system_cpu: dict[str, float] = field(default_factory=dict)
    # The tickets scenarios' desk and departments, and the poison records written meanwhile.
    desk: TicketDesk | None = None
    poisons: list[Poison] = field(default_factory=list)
    # The approvals scenarios' requesters and deciders.
    approvals: ApprovalDesk | None = None

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
    # Played before the day begins, on an idle system (the day then shows that calls flow).
    idle: bool = False
    # What the scenario reports once the day is over and the desks have logged out.
    after: Callable[[Run], None] | None = None
    # The generator's calls in flight at once (its threads): enough that it never holds a call back.
    workers: int = 32
    # Ticket lifecycles played over the day alongside the calls (faults/tickets.py); 0: none.
    tickets: int = 0
    # Approval lifecycles played over the day alongside the calls (faults/approvals.py); 0: none.
    approvals: int = 0


@dataclass
class Row:
    fault: Fault
    total: Check
    checks: list[Check]
    recovery: list[str]
    error: str = ""
    took_s: float = 0.0  # the scenario from its setup to its facts checked


# The faults ---------------------------------------------------------------------------------------


def broker_kill(down_s: float) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        run.system.kill_broker()
        time.sleep(down_s)
        killed_for = time.monotonic()
        ready = run.system.start_broker()
        run.say(f"broker back in {ready - killed_for:.1f} s (JVM start and log recovery)")
        played = (*(("tickets",) if run.desk else ()), *(("approvals",) if run.approvals else ()))
        for name in ("routing", "agents", "intake", "kpi", *played):
            after = run.tail.first_after(name, ready)
            run.say(f"{name} {_seconds(after)} after")

    return inject


def kill_at(service: str, points: tuple[str, ...]) -> Callable[[Run], None]:
    """Restart ``service`` told to die at each point of a unit of work in turn, then measure how long
    the killed instance's successor takes to make its first decision."""

    def inject(run: Run) -> None:
        for point in points:
            run.system.restart(service, held=True, CC_FAILPOINT=f"{point}@3")
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


def poison_where_it_consumes(
    service: str, write: Callable[[KafkaSettings, str], list[Poison]]
) -> Callable[[Run], None]:
    """Records that are not events of ours where ``service`` consumes (``write`` places them). Each
    must be dead-lettered with its reason while the same process goes on serving; then it is killed
    and must start again over its own topic's poison, quarantining it."""

    def inject(run: Run) -> None:
        system = run.system
        pid, exits = system.pid(service), len(system.exits)
        run.poisons.extend(write(system.kafka, run.sim.run_id))
        written = time.monotonic()
        while True:
            check = dead_letters(system.kafka, run.poisons)
            if check.clean or time.monotonic() - written > RETRY_FOR_S:
                break
            time.sleep(1.0)
        took = time.monotonic() - written
        stopped = system.pid(service) != pid or any(name == service for name, _ in system.exits[exits:])
        first = run.tail.first_after(service, written)
        records = len({(p.topic, p.partition, p.offset) for p in run.poisons})
        run.say(
            f"{records} poison records, {check.seen} of {check.expected} dead-letterings in {took:.1f} s by "
            f"the processes that read them ({service} {'stopped' if stopped else 'went on'}; next decision "
            f"{_seconds(first)} after)"
        )
        if stopped:
            raise AssertionError(f"the {service} service stopped over poison records")
        died = time.monotonic()
        system.kill(service)
        system.restart(service)
        serving = system.wait_serving(service)
        for what, reason in sorted(reasons(system.kafka, run.poisons).items()):
            print(f"    dead-lettered {what}: {reason}", flush=True)
        listed = _quarantined(system, service)
        run.say(f"{service} serving {serving - died:.1f} s after kill -9 with {listed} record(s) quarantined")

    return inject


# Agents' topic (the tickets' reaction to wrap-ups) and the tickets' own (its publisher).
poison_tickets = poison_where_it_consumes("tickets", write_tickets_poison)
# Tickets' topic (the approvals' reaction to requests for sign-off) and the approvals' own (its
# publisher, and the tickets' reaction to outcomes).
poison_approvals = poison_where_it_consumes("approvals", approval_faults.write_poison)


def broker_kill_idle(run: Run) -> None:
    """The broker dies while nothing happens; how long after it is back does a call get routed?"""
    run.system.kill_broker()
    time.sleep(2.0)
    ready = run.system.start_broker()
    run.say(f"calls flowing {_seconds(_first_routed_call(run.system, ready))} after the broker was back")


def stop_while_broker_away(run: Run) -> None:
    """SIGTERM while the broker is away: every service stops within its grace period."""
    system = run.system
    system.kill_broker()
    time.sleep(3.0)
    took = {}
    try:
        for name in NAMES:
            asked = time.monotonic()
            system.stop_service(name)
            took[name] = time.monotonic() - asked
    finally:
        system.start_broker()  # whatever happened, the next scenario finds the broker up
    for name in NAMES:
        system.restart(name)
    for name in NAMES:
        system.wait_serving(name)
    run.say("stopped on SIGTERM in " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in took.items()))
    slow = {name: seconds for name, seconds in took.items() if seconds > GRACE_S}
    if slow:
        raise AssertionError(f"services outlived their grace period: {slow}")


def _first_routed_call(system: System, since: float, within_s: float = 120.0) -> float | None:
    """Seconds from ``since`` until a probe call is started and queued (retrying what is refused)."""
    intake = intake_grpc.IntakeServiceStub(CallerChannel(system.address("intake")))
    routing = routing_grpc.RoutingServiceStub(CallerChannel(system.address("routing")))
    contact_id = f"probe-{time.monotonic_ns()}"
    steps = [
        lambda: intake.StartContact(
            intake_pb.StartContactRequest(request_id=f"{contact_id}-start", contact_id=contact_id, channel=1),
            timeout=2,
        ),
        lambda: intake.RequestRouting(
            intake_pb.RequestRoutingRequest(
                request_id=f"{contact_id}-route", contact_id=contact_id, queue_id="general"
            ),
            timeout=2,
        ),
    ]
    deadline = since + within_s
    for step in steps:
        while True:
            try:
                step()
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)
    while time.monotonic() < deadline:
        try:
            position = routing.EstimateWait(
                routing_pb.EstimateWaitRequest(queue_id="general", contact_id=contact_id), timeout=2
            )
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                raise
            time.sleep(0.05)  # routing has not read the request yet
            continue
        if position.position:
            flowing = time.monotonic() - since
            end = intake_pb.EndContactRequest(request_id=f"{contact_id}-end", contact_id=contact_id, reason=1)
            for _ in range(60):  # the probe's caller hangs up (the same request again while refused)
                with contextlib.suppress(grpc.RpcError):
                    intake.EndContact(end, timeout=5)
                    break
                time.sleep(0.5)
            return flowing
        time.sleep(0.05)
    return None


def bad_input(run: Run) -> None:
    """A misbehaving client sends malformed and oversized requests to every service while the day goes
    on: every one is refused for what it is, none with INTERNAL, and nothing of them is written."""
    codes: Counter[str] = Counter()
    huge = "x" * 1_100_000
    channels = {name: CallerChannel(run.system.address(name)) for name in NAMES}
    intake = intake_grpc.IntakeServiceStub(channels["intake"])
    agents = agents_grpc.AgentsServiceStub(channels["agents"])
    routing = routing_grpc.RoutingServiceStub(channels["routing"])
    tickets = tickets_grpc.TicketsServiceStub(channels["tickets"])
    approvals = approvals_grpc.ApprovalsServiceStub(channels["approvals"])
    bad = [
        lambda n: intake.StartContact(
            intake_pb.StartContactRequest(request_id=f"bad-{n}", subject=huge, channel=1)
        ),
        lambda n: intake.StartContact(intake_pb.StartContactRequest(request_id=f"bad-{n}", channel=77)),
        lambda n: intake.EndContact(intake_pb.EndContactRequest(request_id="", contact_id="c", reason=1)),
        lambda n: agents.Login(agents_pb.LoginRequest(request_id=f"bad-{n}", agent_id=huge)),
        lambda n: agents.SetNotReady(
            agents_pb.SetNotReadyRequest(request_id=f"bad-{n}", agent_id="a", reason=99)
        ),
        lambda n: routing.UpsertQueue(
            routing_pb.UpsertQueueRequest(
                request_id=f"bad-{n}", config=routing_ev.QueueConfig(queue_id="bad queue!", priority=1000)
            )
        ),
        lambda n: routing.UpsertQueue(
            routing_pb.UpsertQueueRequest(
                request_id=f"bad-{n}",
                config=routing_ev.QueueConfig(
                    queue_id=f"orphan-{n}",
                    fallback=routing_ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW,
                    fallback_queue_id="no-such-queue",
                ),
            )
        ),
        lambda n: tickets.CreateTicket(
            tickets_pb.CreateTicketRequest(request_id=f"bad-{n}", type=1, priority=3, summary=huge)
        ),
        lambda n: tickets.CreateTicket(
            tickets_pb.CreateTicketRequest(request_id=f"bad-{n}", type=77, priority=9, summary="s")
        ),
        lambda n: tickets.Dispatch(
            tickets_pb.DispatchRequest(request_id=f"bad-{n}", ticket_id="t", department="Not A Dept!")
        ),
        lambda n: approvals.RequestApproval(
            approvals_pb.RequestApprovalRequest(
                request_id=f"bad-{n}", ticket_id="t", kind="refund", justification=huge
            )
        ),
        lambda n: approvals.RequestApproval(
            approvals_pb.RequestApprovalRequest(request_id=f"bad-{n}", ticket_id="t", kind="no such kind")
        ),
        lambda n: approvals.Decide(
            approvals_pb.DecideRequest(request_id=f"bad-{n}", approval_id="a", decision=77)
        ),
    ]
    until = time.monotonic() + 20.0
    n = 0
    while time.monotonic() < until:
        n += 1
        try:
            bad[n % len(bad)](n)
            codes["OK"] += 1
        except grpc.RpcError as error:
            codes[error.code().name] += 1
        time.sleep(0.02)
    for channel in channels.values():
        channel.close()
    run.say(", ".join(f"{count} {code}" for code, count in sorted(codes.items())))
    if codes["INTERNAL"] or codes["UNKNOWN"] or codes["OK"]:
        raise AssertionError(f"bad requests were not all refused for what they are: {dict(codes)}")


def disk_full(for_s: float) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        system = run.system
        if system.disk_mb is None:
            run.say("skipped: the broker's data needs a size-limited folder (tmpfs, as root)")
            return
        ballast = system.fill_disk()
        time.sleep(for_s)
        ballast.unlink()
        freed = time.monotonic()
        died = not broker.is_running(system.broker)
        if died:
            system.start_broker()
        flowing = _first_routed_call(system, freed)
        state = "the broker stopped and was started again" if died else "the broker stayed up"
        run.say(f"disk full {for_s:g} s, then freed: {state}; calls flowing {_seconds(flowing)} after")

    return inject


def clickhouse_down(for_s: float) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        run.system.stop_standin()
        time.sleep(for_s)
        back = time.monotonic()
        run.system.start_standin()
        written = run.tail.first_after("kpi", back)
        run.say(f"ClickHouse away {for_s:g} s; KPIs written again {_seconds(written)} after it was back")

    return inject


def lost_insert_replies(run: Run) -> None:
    run.system.standin_faults('{"lose_insert_replies": 3}')
    run.say("the replies of 3 inserts lost on the way back (each insert done, its answer dropped)")


KPI_TOPICS = ("kpi.contacts.v1", "kpi.agents.v1", "kpi.queues.v1")
FACT_TABLES = ("contact_facts", "offer_facts", "agent_state_intervals")


def rebuild(run: Run) -> None:
    """Every projection rebuilt from the log: the KPI service stopped, its folds (changelog topics and
    consumer-group offsets) and its facts dropped, then started again. The facts and the KPIs of every
    run so far must come out as they were."""
    system = run.system
    before = _kpi_snapshot(system)
    system.stop_service("kpi")
    admin = AdminClient(system.kafka.client_config())
    _delete_group(admin, "kpi")
    for future in admin.delete_topics(list(KPI_TOPICS), operation_timeout=30).values():
        future.result()
    _await_gone(admin, KPI_TOPICS)
    ensure_topics(system.kafka.client_config(), load_topic_specs())
    with system.clickhouse() as client:
        client.command("DROP DATABASE IF EXISTS callcenter SYNC")
    began = time.monotonic()
    system.restart("kpi")
    system.wait_serving("kpi")
    after: dict[str, Any] = {}
    while time.monotonic() - began < 180:
        after = _kpi_snapshot(system)
        if after == before:
            break
        time.sleep(2.0)
    facts = sum(len(rows) for name, rows in before.items() if name in FACT_TABLES)
    if after != before:
        differ = [name for name in before if before[name] != after.get(name)]
        for name in differ:
            was, now = set(before[name]), set(after.get(name, []))
            for row in sorted(was - now)[:3]:
                print(f"    {name} before only: {row}", flush=True)
            for row in sorted(now - was)[:3]:
                print(f"    {name} rebuilt only: {row}", flush=True)
        raise AssertionError(f"the rebuilt KPIs differ in {differ}")
    took, rows = time.monotonic() - began, len(before["kpi_contacts"])
    run.say(f"{facts} facts and {rows} queue KPI rows rebuilt from the log in {took:.0f} s, equal to before")


def _kpi_snapshot(system: System) -> dict[str, Any]:
    """Every fact of the suite's runs, and the contact KPIs per queue over them, as comparable rows."""
    snapshot: dict[str, Any] = {}
    with system.clickhouse() as client:
        for table in FACT_TABLES:
            result = client.query(f"SELECT * FROM {table} FINAL")
            snapshot[table] = sorted(map(_comparable, result.result_rows))
        result = client.query(
            "SELECT * FROM kpi_contacts(by='queue', grain_s=4294967295, "
            "from=toDateTime64('2026-01-01 00:00:00', 3), to=now64(3) + INTERVAL 1 DAY)"
        )
        snapshot["kpi_contacts"] = sorted(map(_comparable, result.result_rows))
    return snapshot


def _comparable(row: tuple[Any, ...]) -> str:
    """A row as text, its floats to 9 significant digits: a sum over parts read in another order differs
    in the last bits (13.357365853658536 against ...537), and that is no difference in a KPI."""
    return repr(tuple(float(f"{value:.9g}") if isinstance(value, float) else value for value in row))


def _delete_group(admin: AdminClient, group: str, within_s: float = 60.0) -> None:
    """Delete a consumer group once it is empty: a static member that stopped stays in its group
    until its session times out (it sends no LeaveGroup, so that a restart takes its partitions back)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            for future in admin.delete_consumer_groups([group], request_timeout=30).values():
                future.result()
            return
        except KafkaException as error:
            if error.args[0].code() != KafkaError.NON_EMPTY_GROUP or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _await_gone(admin: AdminClient, topics: tuple[str, ...], within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not set(topics) & set(admin.list_topics(timeout=10).topics):
            return
        time.sleep(0.2)
    raise TimeoutError(f"topics {topics} were not deleted")


def _quarantined(system: System, name: str) -> int:
    with CallerChannel(system.address(name)) as channel:
        stub = operations_grpc.OperationsServiceStub(channel)
        records = stub.ListQuarantined(operations_pb.ListQuarantinedRequest(), timeout=10).records
    return sum(1 for r in records if not r.resolved)


def nothing(run: Run) -> None:
    run.say("every request sent twice at once")


# What the contact-flow benchmark connects with its offers still prompt on this machine (40/s), and
# twice that: played one after the other, the first is the second's baseline in the same run.
CAPACITY_PER_S = 40.0


def _day_of(service: str) -> Scenario:
    return {"tickets": TICKETS_DAY, "approvals": APPROVALS_DAY}.get(service, DAY)


def steady_calls(run: Run) -> None:
    day = run.sim.scenario
    run.say(f"calls arrive at {day.peak_arrivals_per_s:g}/s for {day.duration_s:g} s")


def throughput(run: Run) -> None:
    """Throughput, refusals and how quick they were; the generator's own delays and CPU apart."""
    sim, tally = run.sim, run.sim.tally
    answered = sorted(v.answered_at for c in sim.contacts.values() for v in c.visits if v.answered_at)
    span = (answered[-1] - answered[0]).total_seconds() if len(answered) > 1 else 0.0
    connected, arriving = len(answered) / span if span else 0.0, tally.arrivals / sim.scenario.duration_s
    refused = tally.refused_in_s
    run.say(
        f"{connected:.1f} connected/s of {arriving:.1f} arriving; {tally.outcomes['refused']} callers "
        f"refused ({_codes(tally.errors)}), refusal p50/p99 {_ms(refused, 0.5)}/{_ms(refused, 0.99)} ms; "
        f"generator: {run.cpu_s / run.wall_s:.0%} of a core, arrivals late p99 "
        f"{_ms(tally.arrival_late_s, 0.99)} ms, send wait p99 {_ms(tally.send_wait_s, 0.99)} ms; "
        f"the system's CPU (of one core each): {describe(run.system_cpu)}"
    )


def _ms(values: list[float], share: float) -> str:
    return f"{percentile(values, share) * 1000:.0f}"


def _codes(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {code}" for code, count in sorted(counts.items())) or "none"


def _twins(sim: Simulation) -> str:
    return _codes(sim.tally.twin_errors)


FAULTS = (
    Fault(
        "broker-kill-under-load", "kill -9 the broker for 2 s while calls flow", broker_kill(2.0), fast=True
    ),
    Fault("duplicate-requests", "every request twice, concurrently", nothing, fast=True, duplicates=True),
    Fault("kill-routing", "kill -9 routing mid-day, restart", kill_plain("routing"), fast=True),
    Fault("kill-agents", "kill -9 agents mid-day, restart", kill_plain("agents")),
    Fault("kill-intake", "kill -9 intake mid-day, restart", kill_plain("intake")),
    Fault("kill-kpi", "kill -9 kpi mid-day, restart", kill_plain("kpi")),
    *(
        Fault(
            f"crash-points-{service}",
            f"kill -9 {service} before the append, before the offsets, before and after the commit",
            kill_at(service, ("before_append", "before_offsets", "before_commit", "after_commit")),
            day=replace(_day_of(service), duration_s=75.0),
            at_s=8.0,
            tickets=TICKETS if service == "tickets" else 0,
            approvals=APPROVALS if service == "approvals" else 0,
        )
        for service in NAMES
    ),
    Fault(
        "routing-lags",
        "routing stopped for a minute while agents and telephony go on",
        pause("routing", 60.0),
    ),
    Fault(
        "routing-lags-briefly",
        "routing stopped for 15 s while agents and telephony go on",
        pause("routing", 15.0),
        fast=True,
    ),
    Fault("agents-lag", "agents stopped for 20 s while routing and telephony go on", pause("agents", 20.0)),
    Fault(
        "tickets-lag",
        "tickets stopped for 20 s while desks, departments and agents go on",
        pause("tickets", 20.0),
        at_s=15.0,
        day=TICKETS_DAY,
        tickets=TICKETS,
    ),
    Fault(
        "tickets-duplicate-requests",
        "every tickets request twice, concurrently",
        nothing,
        day=TICKETS_DAY,
        duplicates=True,
        tickets=TICKETS,
    ),
    Fault(
        "tickets-broker-kill",
        "kill -9 the broker for 2 s while tickets are dispatched and answered",
        broker_kill(2.0),
        at_s=15.0,
        day=TICKETS_DAY,
        tickets=TICKETS,
    ),
    Fault(
        "tickets-poison",
        "undecodable and unknown-version records where tickets consumes (agents', its own), then kill -9",
        poison_tickets,
        at_s=10.0,
        day=TICKETS_DAY,
        tickets=TICKETS,
    ),
    Fault(
        "approvals-lag",
        "approvals stopped for 20 s while tickets ask for sign-off and deciders go on",
        pause("approvals", 20.0),
        at_s=15.0,
        day=APPROVALS_DAY,
        approvals=APPROVALS,
    ),
    Fault(
        "approvals-poison",
        "undecodable and unknown-version records where approvals consumes (tickets', its own), then kill -9",
        poison_approvals,
        fast=True,
        at_s=10.0,
        day=APPROVALS_DAY,
        approvals=APPROVALS,
    ),
    Fault(
        "poison-own-topics",
        "undecodable and unknown-version records in two services' own topics, then kill -9 both",
        poison,
        fast=True,
    ),
    Fault("bad-input-under-load", "malformed and oversized requests to every service", bad_input, fast=True),
    Fault("broker-kill-idle", "kill -9 the idle broker for 2 s", broker_kill_idle, idle=True),
    Fault(
        "sigterm-while-broker-away",
        "SIGTERM every service while the broker is down",
        stop_while_broker_away,
        idle=True,
    ),
    Fault("broker-disk-full", "the broker's disk full for 20 s", disk_full(20.0)),
    Fault("clickhouse-down", "ClickHouse away for a minute", clickhouse_down(60.0)),
    Fault("clickhouse-lost-replies", "inserts done but their replies lost", lost_insert_replies),
    Fault("rebuild-projections", "KPI folds and facts dropped and rebuilt from the log", rebuild, idle=True),
    *(
        Fault(
            name,
            what,
            steady_calls,
            at_s=0.0,
            day=steady(rate, 20.0, int(rate * 5), seed=29),
            after=throughput,
            workers=512,
        )
        for name, what, rate in (
            ("at-capacity", "calls at the rate the system sustains", CAPACITY_PER_S),
            ("overload", "calls at twice the rate the system sustains", 2 * CAPACITY_PER_S),
        )
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
        fault.day,
        endpoints,
        run_id=run_id,
        workers=fault.workers,
        retry_for_s=RETRY_FOR_S,
        duplicate_requests=fault.duplicates,
    )
    desk = None
    if fault.tickets:
        desk = TicketDesk(
            system.address("tickets"),
            system.kafka,
            run_id,
            fault.tickets,
            fault.day.duration_s,
            RETRY_FOR_S,
            twins=fault.duplicates,
        )
    approvals = None
    if fault.approvals:
        approvals = ApprovalDesk(
            system.address("tickets"),
            system.address("approvals"),
            run_id,
            fault.approvals,
            fault.day.duration_s,
            RETRY_FOR_S,
        )
    console.print(f"[bold]{fault.name}[/]: {fault.what} (run {run_id})")
    exits_before = len(system.exits)
    with Tail(system.kafka) as tail:
        run = Run(system, sim, tail, desk=desk, approvals=approvals)
        failure: list[str] = []

        def inject() -> None:
            time.sleep(0 if fault.idle else fault.at_s)
            try:
                fault.inject(run)
            except Exception as error:
                failure.append(f"{type(error).__name__}: {error}")
                traceback.print_exc()

        if fault.idle:
            inject()
        sim.setup()

        injector = threading.Thread(target=inject, name=f"fault-{fault.name}", daemon=True)
        if not fault.idle:
            injector.start()
        started, cpu = time.monotonic(), time.process_time()
        system_cpu = CpuShares(system.pids())
        for player in (desk, approvals):
            if player is not None:
                player.start()
        sim.run(drain_s=90.0)
        for player in (desk, approvals):
            if player is not None:
                player.join(600)
        run.wall_s, run.cpu_s = time.monotonic() - started, time.process_time() - cpu
        run.system_cpu = system_cpu.shares()
        if not fault.idle:
            injector.join(600)
        _all_serving(system)
        sim.teardown(timeout_s=60)
    if fault.after is not None:
        fault.after(run)
    checks = settle(system, sim, run_id, desk, run.poisons, approvals)
    if desk is not None:
        wrap_ups = sum(life.by_wrap_up for life in desk.lifecycles)
        retried = _codes(desk.retried)
        run.say(f"{len(desk.lifecycles)} tickets ({wrap_ups} by wrap-up), requests retried: {retried}")
        if fault.duplicates:
            run.say(f"the ticket twins' differences: {_codes(desk.twin_errors)}")
            for detail in desk.twin_details:
                console.print(f"    [yellow]ticket twin: {detail}")
    if approvals is not None:
        by_ticket = sum(life.plan.via_ticket for life in approvals.lifecycles)
        retried = _codes(approvals.retried)
        run.say(
            f"{len(approvals.lifecycles)} approvals ({by_ticket} by tickets), requests retried: {retried}"
        )
    exited = system.exits[exits_before:]
    if exited:  # a service that stopped itself (fenced, or a bug) and was started again
        run.say("exited by itself and started again: " + ", ".join(f"{n} ({code})" for n, code in exited))
    if fault.duplicates:
        run.say(f"the twins' errors: {_twins(sim)}")
    total = Row(fault, _total(checks), checks, run.recovery, "; ".join(failure)).total
    console.print(f"  {_summary(total)}; recovery: {'; '.join(run.recovery) or '-'}")
    console.print("  checked: " + "; ".join(_figures(check) for check in checks))
    for check in checks:
        for example in check.examples[:3]:
            console.print(f"    [red]{check.name} {example}")
    for detail in sim.tally.error_details:  # the first few of each code
        console.print(f"    [yellow]refused: {detail}")
    for detail in sim.tally.twin_details:
        console.print(f"    [yellow]twin refused: {detail}")
    return Row(fault, total, checks, run.recovery, "; ".join(failure))


# The facts recorded downstream of the logs, which a settled run waits for: the KPIs, what the tickets'
# and the approvals' publishers publish, the tickets' reactions to outcomes, and the dead-letter copies
# of poison records.
SETTLING = (
    "kpi visits",
    "published",
    "inbox work",
    "dead letters",
    "approvals published",
    "approval notices",
    "ticket reactions",
)


def settle(
    system: System,
    sim: Simulation,
    run_id: str,
    desk: TicketDesk | None = None,
    poisons: list[Poison] | None = None,
    approvals: ApprovalDesk | None = None,
    within_s: float = 90.0,
) -> list[Check]:
    """The facts, once what is recorded downstream has caught up with the logs (or ``within_s`` has
    passed)."""
    deadline = time.monotonic() + within_s
    while True:
        logs = read_logs(system.kafka, f"{run_id}-")
        with system.clickhouse() as client:
            rows = kpi_visit_rows(client, f"{run_id}-")
        checks = compare(sim, logs, rows).checks
        if desk is not None:
            events, published = read_tickets(system.kafka, desk.ticket_ids)
            checks += compare_tickets(desk.lifecycles, events, published)
        if approvals is not None:
            checks += compare_approvals(
                approvals.lifecycles, read_approvals(system.kafka, approvals.lifecycles)
            )
        if poisons:
            checks.append(dead_letters(system.kafka, poisons))
        if all(c.clean for c in checks if c.name in SETTLING) or time.monotonic() > deadline:
            return checks
        time.sleep(2.0)


def _total(checks: list[Check]) -> Check:
    total = Check("all")
    for check in checks:
        for attribute in ("expected", "seen", "lost", "doubled", "misrecorded"):
            setattr(total, attribute, getattr(total, attribute) + getattr(check, attribute))
    return total


def _all_serving(system: System) -> None:
    """Every service serving before the next scenario: one that exited or does not serve within a
    minute is started again (and the scenario that left it so has already failed)."""
    for name in NAMES:
        if system.exited(name) is not None:
            system.restart(name)
        try:
            system.wait_serving(name, timeout_s=60)
        except (TimeoutError, RuntimeError):
            if system.exited(name) is None:
                system.dump_stacks(name)  # what it waits for, into its log
            system.kill(name)
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
    """A recovery time; a recovery that did not come fails the scenario (the service did not resume)."""
    if value is None:
        raise AssertionError("no recovery: nothing within 2 min")
    return f"{value:.2f} s"


def _figures(check: Check) -> str:
    """A check's figures in a few characters: seen of expected, then what went wrong, if anything."""
    wrong = [
        f"{getattr(check, kind)} {kind}"
        for kind in ("lost", "doubled", "misrecorded")
        if getattr(check, kind)
    ]
    return f"{check.name} {check.seen}/{check.expected}" + (f" ({', '.join(wrong)})" if wrong else "")


def _summary(check: Check) -> str:
    return (
        f"{check.expected} facts expected, {check.seen} seen, {check.lost} lost, "
        f"{check.doubled} doubled, {check.misrecorded} misrecorded"
    )


def table(rows: list[Row]) -> Table:
    result = Table(title="fault suite")
    for column in ("scenario", "expected", "seen", "lost", "doubled", "misrecorded", "took", "recovery"):
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
            f"{row.took_s:.0f} s",
            recovery,
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the scenarios CI runs")
    parser.add_argument("--only", action="append", default=[], help="a scenario by name (repeatable)")
    parser.add_argument("--root", type=Path, default=DEFAULT_DATA_DIR / "chaos")
    parser.add_argument("--list", action="store_true")
    parser.add_argument(
        "--disk-mb", type=int, default=1024, help="the broker's tmpfs, for the disk-full fault"
    )
    args = parser.parse_args()
    chosen = [f for f in FAULTS if (not args.only or f.name in args.only) and (f.fast or not args.fast)]
    if args.fast:  # CI's budget: shorter days, the faults as they are
        chosen = [replace(f, day=replace(f.day, duration_s=FAST_DAY_S)) for f in chosen]
    console = Console(width=160)
    if args.list or not chosen:
        for fault in FAULTS:
            console.print(f"{fault.name}{' (fast)' if fault.fast else ''}: {fault.what}")
        return 0 if args.list else 2
    needs_disk = any(fault.name == "broker-disk-full" for fault in chosen)
    system = System(args.root, disk_mb=args.disk_mb if needs_disk else None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rows: list[Row] = []
    try:
        console.print(f"starting the system under {args.root}")
        system.start()
        for number, fault in enumerate(chosen):
            began = time.monotonic()
            try:
                rows.append(play(system, fault, number, console))
            except Exception as error:
                traceback.print_exc()
                rows.append(Row(fault, Check("all"), [], [], f"{type(error).__name__}: {error}"))
                _all_serving(system)
            rows[-1].took_s = time.monotonic() - began
    finally:
        system.stop()
    console.print(table(rows))
    bad = [row for row in rows if row.error or not row.total.clean or row.total.expected == 0]
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
