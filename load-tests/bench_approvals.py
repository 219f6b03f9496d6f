"""Approvals on the real broker: requests decided per second, and a decision's reaction on its ticket.

One run, one broker of its own (as bench_tickets.py starts it: free ports, a temporary folder,
topics and ACLs ensured), with the tickets and approvals services in this process, each as its own
Kafka principal. Tickets ask for a small refund through tickets.RequestApproval (the policy's
single-step rule ``refund-small``, decided by a team lead of the center); approvals opens each
request from the ticket's TicketApprovalRequested. Then, each against a bare hop of the same run:

- throughput: ``--requests`` open requests decided by ``--deciders`` team leads at once (each its
  own token, titles ["team_lead"]): requests decided per second, a request counting as decided when
  its Decide returned GRANTED (its ApprovalGranted committed on approvals.events.v1); and concluded
  per second, until the last ticket's TicketApprovalConcluded is seen on tickets.events.v1;
- reaction: from a Decide returned (the grant committed) to the TicketApprovalConcluded of its ticket
  received by a plain read_committed consumer of tickets.events.v1: one hop through the tickets
  service (its read_committed consumer, its decision, its transaction). Under the load above, against
  bare hops sampled during it; and alone, ``--samples`` decisions one at a time, each next to a bare
  hop. Beside it, from the same Decide returned to its ApprovalGranted received on
  approvals.events.v1, and (under load) how much of the reaction passed before the tickets service
  produced its record (the record's timestamp). A bare hop: one transactional produce committed (the
  services' producer settings) until a read_committed consumer (the services' consumer settings)
  receives it.

Bounded in count and time; loopback only.

    python load-tests/bench_approvals.py --json .data/bench-approvals.json
    python load-tests/bench_approvals.py --requests 1000 --deciders 16
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import queue
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from bench_tickets import SAMPLE_TIMEOUT_S, BareHop, _at_end, latency_ms, own_broker, ratio
from callcenter.approvals.v1 import events_pb2 as approval_events
from callcenter.approvals.v1 import service_pb2 as apb
from callcenter.approvals.v1 import service_pb2_grpc as approvals_grpc
from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ticket_events
from callcenter.tickets.v1 import service_pb2 as tpb
from callcenter.tickets.v1 import service_pb2_grpc as tickets_grpc
from confluent_kafka import Consumer
from rich.console import Console
from rich.table import Table
from simulator.callers import CallerChannel, local_issuer, local_settings

from services.approvals.main import ApprovalsProcess
from services.approvals.main import start as start_approvals_process
from services.platform import broker
from services.platform.envelope import EventRegistry, decode
from services.platform.identity import Role
from services.platform.kafka import consumer_config
from services.platform.settings import BrokerSettings, GrpcSettings, HttpSettings, KafkaSettings, Settings
from services.tickets.main import TicketsProcess
from services.tickets.main import start as start_tickets_process

REGISTRY = EventRegistry.of(approval_events, ticket_events)
APPROVALS_TOPIC = "approvals.events.v1"
TICKETS_TOPIC = "tickets.events.v1"
# Up to 1000 CNY in minor units: the policy's refund-small, one step for a team lead of the center.
AMOUNTS = (5_000, 100_000)
GRANTED = apb.APPROVAL_STATUS_GRANTED


@dataclass
class Deciding:
    requested: int
    deciders: int
    decided: int
    seconds: float
    decided_per_s: float
    concluded: int
    concluded_seconds: float
    concluded_per_s: float
    rpc_ms: tuple[float, float]
    granted_ms: tuple[float, float]
    reaction_ms: tuple[float, float]
    reaction_produced_ms: tuple[float, float]
    reaction_from_sent_ms: tuple[float, float]
    bare_hop_ms: tuple[float, float]
    bare_hops: int
    refused: dict[str, int]


@dataclass
class Reacting:
    samples: int
    rpc_ms: tuple[float, float]
    granted_ms: tuple[float, float]
    reaction_ms: tuple[float, float]
    reaction_from_sent_ms: tuple[float, float]
    bare_hop_ms: tuple[float, float]


@dataclass
class Seeding:
    tickets: int
    seconds: float
    opened_seconds: float
    rules: dict[str, int]


@dataclass
class Result:
    seeding: Seeding
    deciding: Deciding
    reacting: Reacting
    run_seconds: float = 0.0
    broker: dict[str, str] = field(default_factory=dict)


def rows(result: Result) -> list[tuple[str, str, str, str]]:
    """(measure, figure, baseline in the same run, ratio) for the report."""
    d, r = result.deciding, result.reacting
    return [
        (
            f"Decide over gRPC, {d.deciders} team leads at once",
            f"{d.decided_per_s:,.0f} decided/s ({d.decided} granted in {d.seconds:.1f} s); "
            f"rpc p50 {d.rpc_ms[0]:.1f} ms, p99 {d.rpc_ms[1]:.1f} ms",
            "-",
            "-",
        ),
        (
            "  to the last TicketApprovalConcluded",
            f"{d.concluded_per_s:,.0f} concluded/s ({d.concluded} in {d.concluded_seconds:.1f} s)",
            "-",
            "-",
        ),
        (
            "  Decide returned -> ApprovalGranted received, under load",
            f"p50 {d.granted_ms[0]:.1f} ms, p99 {d.granted_ms[1]:.1f} ms",
            "-",
            "-",
        ),
        (
            "  Decide returned -> ticket's reaction, under load",
            f"p50 {d.reaction_ms[0]:.1f} ms, p99 {d.reaction_ms[1]:.1f} ms",
            f"bare hop meanwhile p50 {d.bare_hop_ms[0]:.1f} ms, p99 {d.bare_hop_ms[1]:.1f} ms",
            f"p50 {ratio(d.reaction_ms[0], d.bare_hop_ms[0])}, "
            f"p99 {ratio(d.reaction_ms[1], d.bare_hop_ms[1])}",
        ),
        (
            "    of which until tickets produced it (record timestamp)",
            f"p50 {d.reaction_produced_ms[0]:.1f} ms, p99 {d.reaction_produced_ms[1]:.1f} ms",
            "-",
            "-",
        ),
        (
            f"Decide rpc alone ({r.samples} samples)",
            f"p50 {r.rpc_ms[0]:.1f} ms, p99 {r.rpc_ms[1]:.1f} ms",
            f"bare hop p50 {r.bare_hop_ms[0]:.1f} ms",
            ratio(r.rpc_ms[0], r.bare_hop_ms[0]),
        ),
        (
            "Decide returned -> ApprovalGranted received, alone",
            f"p50 {r.granted_ms[0]:.1f} ms, p99 {r.granted_ms[1]:.1f} ms",
            "-",
            "-",
        ),
        (
            "Decide returned -> ticket's reaction, alone",
            f"p50 {r.reaction_ms[0]:.1f} ms, p99 {r.reaction_ms[1]:.1f} ms",
            f"bare hop p50 {r.bare_hop_ms[0]:.1f} ms, p99 {r.bare_hop_ms[1]:.1f} ms",
            f"p50 {ratio(r.reaction_ms[0], r.bare_hop_ms[0])}, "
            f"p99 {ratio(r.reaction_ms[1], r.bare_hop_ms[1])}",
        ),
        (
            "  Decide sent -> ticket's reaction, alone",
            f"p50 {r.reaction_from_sent_ms[0]:.1f} ms, p99 {r.reaction_from_sent_ms[1]:.1f} ms",
            f"bare hop p50 {r.bare_hop_ms[0]:.1f} ms, p99 {r.bare_hop_ms[1]:.1f} ms",
            f"p50 {ratio(r.reaction_from_sent_ms[0], r.bare_hop_ms[0])}, "
            f"p99 {ratio(r.reaction_from_sent_ms[1], r.bare_hop_ms[1])}",
        ),
    ]


def report(result: Result) -> Table:
    table = Table(title=f"approvals on Kafka: one run, one broker, {result.run_seconds:.0f} s")
    for column in ("measure", "figure", "baseline, same run", "ratio"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows(result):
        table.add_row(*row)
    return table


# The services --------------------------------------------------------------------------------------


def service_settings(at: BrokerSettings, root: Path, run: str, name: str) -> Settings:
    return Settings(
        service_name=name,
        instance_id=f"bench-{run}",
        kafka=broker.client_settings(at, name),
        grpc=GrpcSettings(address="127.0.0.1:0"),
        http=HttpSettings(address="127.0.0.1:0"),
        run_dir=root / "run" / name,
    )


def token_of(role: Role, subject: str, titles: Sequence[str] = ()) -> Callable[[str, Any], str]:
    """A chooser for ``CallerChannel`` whose every call is made by one subject (its own token)."""
    token = local_issuer().for_role(role, subject, titles=titles)
    return lambda _method, _request: token


# Watching the topics --------------------------------------------------------------------------------


class Watcher:
    """A plain read_committed consumer of ``topic`` from now on, in a thread of its own: when each
    event of ``wanted`` types was first received (perf_counter), by ``key(payload)``."""

    def __init__(self, kafka: KafkaSettings, topic: str, wanted: dict[str, Callable[[Any], str]]) -> None:
        self.topic = topic
        self._wanted = wanted
        self._consumer = Consumer(consumer_config(kafka, f"bench-watch-{uuid.uuid4().hex[:8]}"))
        _at_end(self._consumer, topic)
        self._seen: dict[tuple[str, str], float] = {}
        # From the record's timestamp (its producer's clock, in ms) to its receipt, by the same keys.
        self._in_kafka: dict[tuple[str, str], float] = {}
        self._arrived = threading.Condition()
        self.undecodable = 0
        self.repeated: Counter[str] = Counter()  # events of a type received again for one key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            received, wall = time.perf_counter(), time.time()
            try:
                envelope = decode(message.value(), message.headers(), REGISTRY)
            except Exception:
                self.undecodable += 1
                continue
            key_of = self._wanted.get(envelope.event_type)
            if key_of is None:
                continue
            with self._arrived:
                seen = (envelope.event_type, key_of(envelope.payload))
                if seen in self._seen:
                    self.repeated[envelope.event_type] += 1
                    continue
                self._seen[seen] = received
                self._in_kafka[seen] = wall - message.timestamp()[1] / 1000
                self._arrived.notify_all()

    def at(self, event_type: str, key: str) -> float:
        """When the event was received; KeyError if it was not."""
        with self._arrived:
            return self._seen[(event_type, key)]

    def in_kafka(self, event_type: str, key: str) -> float:
        """From the record's timestamp (when its producer made it) to its receipt."""
        with self._arrived:
            return self._in_kafka[(event_type, key)]

    def count(self, event_type: str) -> int:
        with self._arrived:
            return sum(1 for t, _ in self._seen if t == event_type)

    def wait_for(self, event_type: str, keys: Sequence[str], timeout_s: float) -> float:
        """perf_counter() when the last of ``keys`` was received; TimeoutError naming how many are missing."""
        give_up = time.monotonic() + timeout_s
        with self._arrived:
            while True:
                missing = [k for k in keys if (event_type, k) not in self._seen]
                if not missing:
                    return max(self._seen[(event_type, k)] for k in keys)
                left = give_up - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(missing)} of {len(keys)} {event_type} not seen on {self.topic} "
                        f"within {timeout_s:.0f} s (first missing: {missing[0]})"
                    )
                self._arrived.wait(min(left, 0.5))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


# Seeding: tickets that wait for approval ----------------------------------------------------------------


def ticket_waiting_for_approval(stub: tickets_grpc.TicketsServiceStub, rng: random.Random) -> tuple[str, str]:
    created = stub.CreateTicket(
        tpb.CreateTicketRequest(
            request_id=uuid.uuid4().hex,
            type=ticket_events.TICKET_TYPE_COMPLAINT,
            priority=3,
            summary="Charged twice for water",
            category="water.billing",
            customer=types_pb2.PartyReference(hash="cd" * 32, masked="*******1234"),
        ),
        timeout=SAMPLE_TIMEOUT_S,
    ).ticket
    asked = stub.RequestApproval(
        tpb.RequestApprovalRequest(
            request_id=uuid.uuid4().hex,
            ticket_id=created.ticket_id,
            kind="refund",
            amount=types_pb2.Money(minor_units=rng.randint(*AMOUNTS), currency="CNY"),
            justification="charged twice",
        ),
        timeout=SAMPLE_TIMEOUT_S,
    )
    return created.ticket_id, asked.approval_id


def seed(
    stub: tickets_grpc.TicketsServiceStub,
    approvals: Watcher,
    count: int,
    in_flight: int,
    seconds: float,
    rng: random.Random,
) -> tuple[list[tuple[str, str]], float, float]:
    """``count`` tickets each waiting for its refund's approval, ``in_flight`` at once, then each request
    open on approvals (its ApprovalStepOpened seen): (ticket, approval) pairs, seconds to ask, to open."""
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        pairs = list(pool.map(lambda _: ticket_waiting_for_approval(stub, rng), range(count)))
    asked = time.perf_counter()
    approvals.wait_for("ApprovalStepOpened", [a for _, a in pairs], seconds)
    return pairs, asked - began, time.perf_counter() - asked


def decide(stub: approvals_grpc.ApprovalsServiceStub, approval_id: str) -> apb.ApprovalView:
    request = apb.DecideRequest(
        request_id=uuid.uuid4().hex,
        approval_id=approval_id,
        step_index=0,
        decision=approval_events.DECISION_APPROVE,
        comment="refund fine",
    )
    return stub.Decide(request, timeout=SAMPLE_TIMEOUT_S).approval


# 1. Requests decided per second, and the reaction under that load ------------------------------------


class HopsMeanwhile:
    """Bare hops, one every ``every_s``, in a thread of their own while the load runs."""

    def __init__(self, hop: BareHop, every_s: float = 0.05) -> None:
        self._hop = hop
        self._every = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bare-hops", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.samples.append(self._hop.once())

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(SAMPLE_TIMEOUT_S + 5)
        return self.samples


def decide_all(
    stubs: Sequence[approvals_grpc.ApprovalsServiceStub],
    pairs: Sequence[tuple[str, str]],
    approvals: Watcher,
    tickets: Watcher,
    hop: BareHop,
    seconds: float,
) -> Deciding:
    """Every request of ``pairs`` decided, one decider per stub at once, for at most ``seconds``."""
    todo: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
    for pair in pairs:
        todo.put(pair)
    timed: list[tuple[str, float, float]] = []  # approval, sent, returned
    refused: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    def decider(stub: approvals_grpc.ApprovalsServiceStub) -> None:
        while time.monotonic() < deadline:
            try:
                _, approval_id = todo.get_nowait()
            except queue.Empty:
                return
            sent = time.perf_counter()
            try:
                view = decide(stub, approval_id)
            except grpc.RpcError as error:
                refused[error.code().name] += 1
                continue
            returned = time.perf_counter()
            if view.status != GRANTED:
                refused[f"returned {apb.ApprovalStatus.Name(view.status)}"] += 1
                continue
            timed.append((approval_id, sent, returned))

    meanwhile = HopsMeanwhile(hop)
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(stubs)) as pool:
        for call in [pool.submit(decider, stub) for stub in stubs]:
            call.result()
    ended = time.perf_counter()
    decided = [a for a, _, _ in timed]
    try:
        last = tickets.wait_for("TicketApprovalConcluded", decided, 60.0)
        approvals.wait_for("ApprovalGranted", decided, 10.0)
    finally:
        bare = meanwhile.stop()
    granted = [approvals.at("ApprovalGranted", a) - returned for a, _, returned in timed]
    reaction = [tickets.at("TicketApprovalConcluded", a) - returned for a, _, returned in timed]
    produced = [
        r - tickets.in_kafka("TicketApprovalConcluded", a)
        for r, (a, _, _) in zip(reaction, timed, strict=True)
    ]
    from_sent = [tickets.at("TicketApprovalConcluded", a) - sent for a, sent, _ in timed]
    return Deciding(
        requested=len(pairs),
        deciders=len(stubs),
        decided=len(decided),
        seconds=ended - began,
        decided_per_s=len(decided) / (ended - began),
        concluded=len(decided),
        concluded_seconds=last - began,
        concluded_per_s=len(decided) / (last - began),
        rpc_ms=latency_ms([returned - sent for _, sent, returned in timed]),
        granted_ms=latency_ms(granted),
        reaction_ms=latency_ms(reaction),
        reaction_produced_ms=latency_ms(produced),
        reaction_from_sent_ms=latency_ms(from_sent),
        bare_hop_ms=latency_ms(bare),
        bare_hops=len(bare),
        refused=dict(refused),
    )


# 2. The reaction alone, each next to a bare hop ----------------------------------------------------------


def react_alone(
    stub: approvals_grpc.ApprovalsServiceStub,
    pairs: Sequence[tuple[str, str]],
    approvals: Watcher,
    tickets: Watcher,
    hop: BareHop,
    seconds: float,
) -> Reacting:
    """Each request decided alone, then its ticket's reaction awaited; each next to a bare hop so that
    drift on a noisy machine falls on both."""
    rpc: list[float] = []
    granted: list[float] = []
    reaction: list[float] = []
    from_sent: list[float] = []
    bare: list[float] = []
    deadline = time.monotonic() + seconds
    for _, approval_id in pairs:
        if time.monotonic() > deadline:
            break
        bare.append(hop.once())
        sent = time.perf_counter()
        view = decide(stub, approval_id)
        returned = time.perf_counter()
        if view.status != GRANTED:
            raise RuntimeError(
                f"approval {approval_id} is {apb.ApprovalStatus.Name(view.status)} after Decide"
            )
        seen = tickets.wait_for("TicketApprovalConcluded", [approval_id], SAMPLE_TIMEOUT_S)
        rpc.append(returned - sent)
        granted.append(approvals.wait_for("ApprovalGranted", [approval_id], SAMPLE_TIMEOUT_S) - returned)
        reaction.append(seen - returned)
        from_sent.append(seen - sent)
        time.sleep(0.01)  # apart, as the bare hop's samples are: each measures one record alone
    return Reacting(
        samples=len(rpc),
        rpc_ms=latency_ms(rpc),
        granted_ms=latency_ms(granted),
        reaction_ms=latency_ms(reaction),
        reaction_from_sent_ms=latency_ms(from_sent),
        bare_hop_ms=latency_ms(bare),
    )


# The run ----------------------------------------------------------------------------------------------


def measure(at: BrokerSettings, root: Path, run: str, args: argparse.Namespace, console: Console) -> Result:
    rng = random.Random(args.seed)
    tickets_service: TicketsProcess = start_tickets_process(service_settings(at, root, run, "tickets"))
    approvals_service: ApprovalsProcess | None = None
    channels: list[CallerChannel] = []
    watchers: list[Watcher] = []
    hop: BareHop | None = None
    try:
        approvals_service = start_approvals_process(service_settings(at, root, run, "approvals"))
        kafka = broker.client_settings(at)
        approvals_seen = Watcher(
            kafka,
            APPROVALS_TOPIC,
            {"ApprovalStepOpened": lambda e: e.approval_id, "ApprovalGranted": lambda e: e.approval_id},
        )
        tickets_seen = Watcher(kafka, TICKETS_TOPIC, {"TicketApprovalConcluded": lambda e: e.approval_id})
        watchers += [approvals_seen, tickets_seen]
        desk = CallerChannel(f"127.0.0.1:{tickets_service.server.port}", token_of(Role.AGENT, "agent-7"))
        channels.append(desk)
        approvals_at = f"127.0.0.1:{approvals_service.server.port}"
        leads = []
        for n in range(args.deciders):
            channel = CallerChannel(approvals_at, token_of(Role.AGENT, f"lead-{n}", ["team_lead"]))
            channels.append(channel)
            leads.append(approvals_grpc.ApprovalsServiceStub(channel))
        hop = BareHop(kafka)

        count = args.warm_up + args.requests + args.samples
        pairs, asked_s, opened_s = seed(
            tickets_grpc.TicketsServiceStub(desk),
            approvals_seen,
            count,
            args.in_flight,
            args.seed_seconds,
            rng,
        )
        rules = Counter(
            leads[0].GetRequest(apb.GetRequestRequest(approval_id=a)).approval.rule for _, a in pairs[:20]
        )
        seeding = Seeding(count, asked_s, opened_s, dict(rules))
        console.print(
            f"{count} tickets asked for approval in {asked_s:.1f} s, all open on approvals "
            f"{opened_s:.1f} s later; rules (first 20): {dict(rules)}"
        )
        warm, load, alone = (
            pairs[: args.warm_up],
            pairs[args.warm_up : args.warm_up + args.requests],
            pairs[args.warm_up + args.requests :],
        )
        react_alone(
            leads[0], warm, approvals_seen, tickets_seen, hop, 60.0
        )  # groups joined, connections warm
        deciding = decide_all(leads, load, approvals_seen, tickets_seen, hop, args.decide_seconds)
        console.print(
            f"decided {deciding.decided} of {deciding.requested} in {deciding.seconds:.1f} s, "
            f"{len(leads)} at once; {deciding.bare_hops} bare hops meanwhile"
        )
        reacting = react_alone(leads[0], alone, approvals_seen, tickets_seen, hop, args.sample_seconds)
        console.print(f"decided {reacting.samples} alone, each reaction seen on {TICKETS_TOPIC}")
        decided = args.warm_up + deciding.decided + reacting.samples
        console.print(
            f"{approvals_seen.count('ApprovalGranted')} ApprovalGranted seen on {APPROVALS_TOPIC}, "
            f"{tickets_seen.count('TicketApprovalConcluded')} TicketApprovalConcluded on {TICKETS_TOPIC}, "
            f"for {decided} granted decisions"
        )
        for watcher in watchers:
            if watcher.repeated:
                console.print(f"received again on {watcher.topic}: {dict(watcher.repeated)}")
        if approvals_seen.undecodable or tickets_seen.undecodable:
            console.print(
                f"undecodable records: {approvals_seen.undecodable} on {APPROVALS_TOPIC}, "
                f"{tickets_seen.undecodable} on {TICKETS_TOPIC}"
            )
        return Result(seeding, deciding, reacting)
    finally:
        if hop is not None:
            hop.close()
        for watcher in watchers:
            watcher.close()
        for channel in channels:
            channel.close()
        if approvals_service is not None:
            approvals_service.close(10)
        tickets_service.close(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="open requests decided under load")
    parser.add_argument("--deciders", type=int, default=8, help="team leads deciding at once")
    parser.add_argument("--decide-seconds", type=float, default=120.0, help="at most this long deciding")
    parser.add_argument("--samples", type=int, default=100, help="decisions alone, each next to a bare hop")
    parser.add_argument("--sample-seconds", type=float, default=90.0, help="at most this long sampling")
    parser.add_argument("--warm-up", type=int, default=10, help="decisions not measured, first")
    parser.add_argument("--in-flight", type=int, default=8, help="tickets asking for approval at once")
    parser.add_argument("--seed-seconds", type=float, default=120.0, help="at most this long for all to open")
    parser.add_argument("--seed", type=int, default=7, help="of the refunds' amounts")
    parser.add_argument("--json", type=Path, help="also write the results here, as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=200)
    run = uuid.uuid4().hex[:8]
    began = time.monotonic()
    local_settings()  # the local CA and token signing key, made if missing: the broker and gRPC use them
    root = Path(tempfile.mkdtemp(prefix="bench-approvals-"))
    try:
        with own_broker(root) as at:
            servers = {"bootstrap_servers": broker.bootstrap_servers(at), "security": at.security}
            console.print(f"broker of this run on {servers['bootstrap_servers']}, {at.security}")
            result = measure(at, root, run, args, console)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result.run_seconds, result.broker = time.monotonic() - began, servers
    console.print(report(result))
    if result.deciding.refused:
        console.print(f"Decide calls refused or not granted: {result.deciding.refused}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
