"""The tickets service on the real broker: tickets created per second, dispatch to inbox, and replay.

One run, one broker of its own (started on free ports under a temporary folder, as the tests start
theirs, so the tickets topic and the publisher's consumer group are nobody else's), with topics
and ACLs ensured, and the tickets service in this process as its own Kafka principal. Three
measures, each against a baseline taken in the same run on the same broker:

- CreateTicket over gRPC (TLS, a token per call), ``--in-flight`` calls at once: calls/s, p50/p99;
- Dispatch to a department, until that department's plain read_committed consumer receives the
  WorkDispatched on its inbox: two transactional hops (the service's commit to tickets.events.v1,
  then the publisher's consume-publish-commit to ``dept.<code>.inbox.v1``). Its baseline, sample by
  sample interleaved with it: one bare transactional produce read back by a read_committed consumer;
- replay: ``--events`` ticket events (real lifecycles, decided once and re-keyed per ticket) written
  to a fresh topic, then rebuilt by a tickets event store as a restarting service would; against a
  bare consumer reading the same topic to its end (and one that also decodes every envelope).

The service is stopped before the replay, so it competes with nothing. Bounded in count and time;
loopback only.

    python load-tests/bench_tickets.py --json .data/bench-tickets.json
    python load-tests/bench_tickets.py --events 100000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import logging
import math
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev
from callcenter.tickets.v1 import service_pb2 as pb
from callcenter.tickets.v1 import service_pb2_grpc
from callcenter.workflow.v1 import events_pb2 as wf
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from simulator.callers import CallerChannel, local_settings
from simulator.measure import percentile

from services.platform import broker
from services.platform.acls import ensure_access, load_acl_specs
from services.platform.envelope import Actor, Cause, decode, encode, make_envelope
from services.platform.kafka import consumer_config, producer_config
from services.platform.process import kafka_adapters, open_store
from services.platform.settings import (
    BrokerSettings,
    GrpcSettings,
    HttpSettings,
    KafkaSettings,
    Settings,
    StoreSettings,
)
from services.platform.topics import ensure_topics, inbox_topic, load_topic_specs
from services.tickets import domain
from services.tickets.handlers import KIND, child_id, registry, ticket_id_for, ticket_kind
from services.tickets.main import TicketsProcess, start
from services.tickets.policies import Rules

DEPARTMENT = "environment"
CATEGORY = "environment.noise"
REGISTRY = registry()
# A sample that takes longer than this ends the run: something is broken, not slow.
SAMPLE_TIMEOUT_S = 30.0


def latency_ms(samples: Sequence[float]) -> tuple[float, float]:
    """Median and p99 of samples in seconds, in milliseconds (NaN without samples)."""
    return percentile(samples, 0.5) * 1000, percentile(samples, 0.99) * 1000


def ratio(measured: float, baseline: float) -> str:
    """How many times the baseline; "-" when either side is missing."""
    if not baseline or math.isnan(measured) or math.isnan(baseline):
        return "-"
    return f"{measured / baseline:.1f}x"


@dataclass
class Creating:
    requested: int
    in_flight: int
    created: int
    seconds: float
    calls_per_s: float
    latency_ms: tuple[float, float]
    refused: dict[str, int]


@dataclass
class Dispatching:
    samples: int
    department: str
    to_inbox_ms: tuple[float, float]
    rpc_ms: tuple[float, float]
    bare_hop_ms: tuple[float, float]


@dataclass
class Replaying:
    events: int
    tickets: int
    events_per_ticket: int
    write_seconds: float
    replayed_events: int
    rebuilt_tickets: int
    quarantined: int
    replay_seconds: float
    replay_per_s: float
    bare_read_per_s: tuple[float, float]  # before and after the store's replay
    decode_read_per_s: float


@dataclass
class Result:
    creating: Creating
    dispatching: Dispatching
    replaying: Replaying
    run_seconds: float = 0.0
    broker: dict[str, str] = field(default_factory=dict)


def rows(result: Result) -> list[tuple[str, str, str, str]]:
    """(measure, figure, baseline in the same run, ratio) for the report."""
    c, d, r = result.creating, result.dispatching, result.replaying
    bare_read = sum(r.bare_read_per_s) / len(r.bare_read_per_s)
    return [
        (
            f"CreateTicket over gRPC, {c.in_flight} in flight",
            f"{c.calls_per_s:,.0f} calls/s ({c.created} in {c.seconds:.1f} s); "
            f"p50 {c.latency_ms[0]:.1f} ms, p99 {c.latency_ms[1]:.1f} ms",
            "-",
            "-",
        ),
        (
            f"Dispatch rpc returned ({d.samples} samples)",
            f"p50 {d.rpc_ms[0]:.1f} ms, p99 {d.rpc_ms[1]:.1f} ms",
            f"bare hop p50 {d.bare_hop_ms[0]:.1f} ms",
            ratio(d.rpc_ms[0], d.bare_hop_ms[0]),
        ),
        (
            f"Dispatch -> {inbox_topic(d.department)} (2 hops)",
            f"p50 {d.to_inbox_ms[0]:.1f} ms, p99 {d.to_inbox_ms[1]:.1f} ms",
            f"bare transactional hop p50 {d.bare_hop_ms[0]:.1f} ms, p99 {d.bare_hop_ms[1]:.1f} ms",
            f"p50 {ratio(d.to_inbox_ms[0], d.bare_hop_ms[0])}, "
            f"p99 {ratio(d.to_inbox_ms[1], d.bare_hop_ms[1])}",
        ),
        (
            f"Tickets store rebuilt from {r.events:,} events ({r.tickets:,} tickets)",
            f"{r.replay_per_s:,.0f} events/s ({r.replay_seconds:.1f} s)",
            f"bare consumer to the end {bare_read:,.0f} records/s",
            f"{ratio(bare_read, r.replay_per_s)} slower",
        ),
        (
            "  of which reading and decoding envelopes",
            f"{r.decode_read_per_s:,.0f} records/s",
            f"bare consumer to the end {bare_read:,.0f} records/s",
            f"{ratio(bare_read, r.decode_read_per_s)} slower",
        ),
    ]


def report(result: Result) -> Table:
    table = Table(title=f"tickets on Kafka: one run, one broker, {result.run_seconds:.0f} s")
    for column in ("measure", "figure", "baseline, same run", "ratio"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows(result):
        table.add_row(*row)
    return table


# The broker and the service ------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextmanager
def own_broker(root: Path) -> Iterator[BrokerSettings]:
    """A broker of this run on free ports, data under ``root``, with the project's topics and ACLs."""
    configured = Settings().broker
    settings = configured.model_copy(
        update={
            "port": _free_port(configured.host),
            "controller_port": _free_port(configured.host),
            "data_dir": root / "kafka",
        }
    )
    broker.start(settings)
    try:
        broker.wait_ready(settings)
        admin = broker.client_settings(settings)
        ensure_topics(admin.client_config(), load_topic_specs())
        if settings.secured:
            ensure_access(admin.client_config(), load_acl_specs(), settings.credentials_dir)
        yield settings
    finally:
        broker.stop(settings)


def start_tickets(at: BrokerSettings, root: Path, run: str) -> TicketsProcess:
    settings = Settings(
        service_name="tickets",
        instance_id=f"bench-{run}",
        kafka=broker.client_settings(at, "tickets"),
        grpc=GrpcSettings(address="127.0.0.1:0"),
        http=HttpSettings(address="127.0.0.1:0"),
        run_dir=root / "run",
    )
    return start(settings)


# 1. Tickets created per second ---------------------------------------------------------------------


def create_request() -> pb.CreateTicketRequest:
    return pb.CreateTicketRequest(
        request_id=uuid.uuid4().hex,
        type=ev.TICKET_TYPE_COMPLAINT,
        priority=3,
        summary="Night-time construction noise",
        category=CATEGORY,
        customer=types_pb2.PartyReference(hash="ab" * 32, masked="*******5678"),
    )


def create_tickets(
    stub: service_pb2_grpc.TicketsServiceStub, count: int, in_flight: int, seconds: float
) -> tuple[list[str], list[float], float, Counter[str]]:
    """Up to ``count`` CreateTicket calls, ``in_flight`` at once, for at most ``seconds``:
    the ids created, each call's latency, the time taken and the refusals by status code."""
    ids: list[str] = []
    latencies: list[float] = []
    refused: Counter[str] = Counter()
    numbers = itertools.count()
    began = time.perf_counter()
    deadline = time.monotonic() + seconds

    def caller() -> None:
        while next(numbers) < count and time.monotonic() < deadline:
            sent = time.perf_counter()
            try:
                response = stub.CreateTicket(create_request(), timeout=SAMPLE_TIMEOUT_S)
            except grpc.RpcError as error:
                refused[error.code().name] += 1
                continue
            latencies.append(time.perf_counter() - sent)
            ids.append(response.ticket.ticket_id)

    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        for call in [pool.submit(caller) for _ in range(in_flight)]:
            call.result()
    return ids, latencies, time.perf_counter() - began, refused


# 2. Dispatch -> inbox, against a bare transactional hop ----------------------------------------------


def _at_end(consumer: Consumer, topic: str) -> None:
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign(
        [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
            for p in partitions
        ]
    )


class Inbox:
    """A department's inbox as the department reads it: a plain read_committed consumer, from now on."""

    def __init__(self, kafka: KafkaSettings, department: str) -> None:
        self.topic = inbox_topic(department)
        self._consumer = Consumer(consumer_config(kafka, f"dept-{department}-bench-{uuid.uuid4().hex[:8]}"))
        _at_end(self._consumer, self.topic)

    def wait_for_dispatch(self, ticket_id: str, timeout_s: float = SAMPLE_TIMEOUT_S) -> float:
        """perf_counter() when the WorkDispatched of ``ticket_id`` arrives."""
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            message = self._consumer.poll(1)
            if message is None or message.error() is not None:
                continue
            event = wf.WorkflowEvent.FromString(message.value())
            if event.subject_id == ticket_id and event.WhichOneof("event") == "work_dispatched":
                return time.perf_counter()
        raise TimeoutError(f"no WorkDispatched of {ticket_id} on {self.topic} within {timeout_s:.0f} s")

    def close(self) -> None:
        self._consumer.close()


class BareHop:
    """One transactional produce (idempotent, as the services' writers) committed, and the time
    until a read_committed consumer receives it; on a topic of its own, created and deleted here."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.topic = f"bench.tickets.hop.{uuid.uuid4().hex[:8]}"
        self._admin = AdminClient(kafka.client_config())
        self._admin.create_topics([NewTopic(self.topic, 1, 1)])[self.topic].result(30)
        self._producer = Producer(producer_config(kafka, f"bench-hop-{uuid.uuid4().hex[:8]}"))
        self._producer.init_transactions(30)
        self._consumer = Consumer(consumer_config(kafka, f"bench-hop-{uuid.uuid4().hex[:8]}"))
        _at_end(self._consumer, self.topic)
        self._key = uuid.uuid4().hex.encode()
        self._sent = 0

    def once(self) -> float:
        self._sent += 1
        mark = str(self._sent).encode()
        sent = time.perf_counter()
        self._producer.begin_transaction()
        self._producer.produce(self.topic, mark, self._key)
        self._producer.commit_transaction(30)
        give_up = time.monotonic() + SAMPLE_TIMEOUT_S
        while time.monotonic() < give_up:
            message = self._consumer.poll(1)
            if message is not None and message.error() is None and message.value() == mark:
                return time.perf_counter() - sent
        raise TimeoutError(f"bare record {self._sent} not seen on {self.topic} in {SAMPLE_TIMEOUT_S:.0f} s")

    def close(self) -> None:
        self._consumer.close()
        self._producer.flush(5)
        self._admin.delete_topics([self.topic])[self.topic].result(30)


def dispatch_to_inbox(
    stub: service_pb2_grpc.TicketsServiceStub,
    tickets: Sequence[str],
    inbox: Inbox,
    hop: BareHop,
    warm_up: int,
    seconds: float,
) -> tuple[list[float], list[float], list[float]]:
    """Each ticket dispatched to the inbox's department, one at a time, each sample next to a bare hop
    so that drift on a noisy machine falls on both: (to inbox, rpc returned, bare hop) in seconds.
    The first ``warm_up`` are not kept (the publisher's group is still joining, the JVM warming)."""
    to_inbox: list[float] = []
    rpc: list[float] = []
    bare: list[float] = []
    deadline = time.monotonic() + seconds
    for n, ticket_id in enumerate(tickets):
        if n >= warm_up and time.monotonic() > deadline:
            break
        hopped = hop.once()
        request = pb.DispatchRequest(request_id=uuid.uuid4().hex, ticket_id=ticket_id, department=DEPARTMENT)
        sent = time.perf_counter()
        stub.Dispatch(request, timeout=SAMPLE_TIMEOUT_S)
        returned = time.perf_counter()
        seen = inbox.wait_for_dispatch(ticket_id, timeout_s=60.0 if n < warm_up else SAMPLE_TIMEOUT_S)
        if n >= warm_up:
            to_inbox.append(seen - sent)
            rpc.append(returned - sent)
            bare.append(hopped)
        time.sleep(0.01)  # apart, as the bare hop's samples are: each measures one record alone
    return to_inbox, rpc, bare


# 3. Replay over a million events ----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One event of the template lifecycle, and the command (by name) that caused it."""

    payload: Message
    occurred_at: datetime
    command: str
    actor: Actor


def template_lifecycle(rules: Rules, now: datetime) -> list[Step]:
    """A complaint created, dispatched to the department and accepted, decided by the real domain."""
    ticket_id = ticket_id_for("bench/template")
    dispatch_id = child_id("bench/template/dispatch", "dispatch/0")
    desk, department = Actor("agent-7", ("agent",)), Actor(f"dept-{DEPARTMENT}", ("department",))
    commands: list[tuple[domain.Command, Actor]] = [
        (
            domain.CreateTicket(
                ticket_id,
                now,
                desk.subject,
                type=ev.TICKET_TYPE_COMPLAINT,
                priority=3,
                summary="Night-time construction noise",
                category=CATEGORY,
                customer_hash="ab" * 32,
                customer_masked="*******5678",
            ),
            desk,
        ),
        (
            domain.DispatchTicket(
                ticket_id, now, desk.subject, dispatch_ids=(dispatch_id,), to_department=DEPARTMENT
            ),
            desk,
        ),
        (
            domain.AcceptDispatch(
                ticket_id, now, department.subject, department=DEPARTMENT, dispatch_id=dispatch_id
            ),
            department,
        ),
    ]
    ticket = domain.Ticket(ticket_id)
    steps: list[Step] = []
    for command, actor in commands:
        for payload in domain.decide(ticket, command, rules):
            envelope = make_envelope(
                payload,
                registry=REGISTRY,
                aggregate_type=KIND,
                aggregate_id=ticket_id,
                aggregate_version=len(steps) + 1,
                occurred_at=command.now,
                cause=Cause.request(f"template/{len(steps)}"),
            )
            ticket = domain.evolve(ticket, envelope)
            steps.append(Step(payload, command.now, type(command).__name__, actor))
    return steps


def ticket_events(steps: Sequence[Step], ticket_id: str, run: str) -> Iterator[tuple[bytes, bytes, list]]:
    """The template's events re-keyed to ``ticket_id``, with ids and causes of their own, encoded."""
    for version, step in enumerate(steps, start=1):
        payload = type(step.payload)()
        payload.CopyFrom(step.payload)
        payload.ticket_id = ticket_id  # type: ignore[attr-defined]
        request = f"bench/{run}/{ticket_id}/{step.command}"
        envelope = make_envelope(
            payload,
            registry=REGISTRY,
            aggregate_type=KIND,
            aggregate_id=ticket_id,
            aggregate_version=version,
            occurred_at=step.occurred_at,
            cause=Cause.request(request, fingerprint="bench", actor=step.actor),
        )
        yield encode(envelope)


def write_events(kafka: KafkaSettings, topic: str, steps: Sequence[Step], events: int, run: str) -> int:
    """``events`` events of whole lifecycles (the last ticket's may stop short) on ``topic``; tickets."""
    producer = Producer(
        {
            **kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",  # as the services' writers place keys
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
        }
    )
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error.str())

    written = tickets = 0
    while written < events:
        ticket_id = ticket_id_for(f"bench/{run}/{tickets}")
        tickets += 1
        for key, value, headers in itertools.islice(ticket_events(steps, ticket_id, run), events - written):
            while True:
                try:
                    producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            written += 1
        producer.poll(0)
    left = producer.flush(120)
    if left or failures:
        raise RuntimeError(f"writing {topic}: {left} not acknowledged, {len(failures)} failed {failures[:1]}")
    return tickets


def read_to_end(kafka: KafkaSettings, topic: str, decoding: bool) -> tuple[int, float]:
    """A plain read_committed consumer reading ``topic`` from its start to its end: records, seconds.
    ``decoding``: each record's envelope decoded too, as the store's replay does before it applies."""
    consumer = Consumer(
        consumer_config(kafka, f"bench-read-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True})
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        began = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        remaining, records = set(partitions), 0
        while remaining:
            for message in consumer.consume(1000, timeout=1):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"reading {topic}: {error.str()}")
                    remaining.discard(message.partition())
                    continue
                if decoding:
                    decode(message.value(), message.headers(), REGISTRY)
                records += 1
        return records, time.perf_counter() - began
    finally:
        consumer.close()


def replay(kafka: KafkaSettings, topic: str, root: Path, run: str) -> tuple[int, int, int, float]:
    """A tickets store over ``topic`` (no snapshots), started as a restarting service's: replayed
    events, tickets rebuilt, records quarantined, seconds."""
    settings = Settings(
        service_name="tickets",
        instance_id=f"bench-replay-{run}",
        kafka=kafka,
        store=StoreSettings(snapshot_every=0),
        run_dir=root / "run",
    )
    kinds = [ticket_kind()]
    store = open_store(settings, kafka_adapters(settings), "tickets", (topic, None), REGISTRY, kinds)
    began = time.perf_counter()
    store.start()
    seconds = time.perf_counter() - began
    try:
        return store.replayed_events, sum(1 for _ in store.states(KIND)), len(store.quarantined()), seconds
    finally:
        store.close(5)


def measure_replay(kafka: KafkaSettings, rules: Rules, events: int, root: Path, run: str) -> Replaying:
    topic = f"bench.tickets.replay.{run}"
    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)  # as tickets.events.v1
    try:
        steps = template_lifecycle(rules, datetime.now(UTC))
        began = time.perf_counter()
        tickets = write_events(kafka, topic, steps, events, run)
        write_seconds = time.perf_counter() - began
        read, before = read_to_end(kafka, topic, decoding=False)
        decoded, decode_seconds = read_to_end(kafka, topic, decoding=True)
        replayed, rebuilt, quarantined, seconds = replay(kafka, topic, root, run)
        read_after, after = read_to_end(kafka, topic, decoding=False)
        if not read == decoded == read_after == events:
            raise RuntimeError(f"{topic} holds {read}/{decoded}/{read_after} records, not {events}")
    finally:
        admin.delete_topics([topic])[topic].result(60)
    return Replaying(
        events=events,
        tickets=tickets,
        events_per_ticket=len(steps),
        write_seconds=write_seconds,
        replayed_events=replayed,
        rebuilt_tickets=rebuilt,
        quarantined=quarantined,
        replay_seconds=seconds,
        replay_per_s=replayed / seconds,
        bare_read_per_s=(read / before, read_after / after),
        decode_read_per_s=decoded / decode_seconds,
    )


# The run ----------------------------------------------------------------------------------------------


def measure_service(
    at: BrokerSettings, root: Path, run: str, args: argparse.Namespace, console: Console
) -> tuple[Creating, Dispatching, Rules]:
    """Measures 1 and 2 on the tickets service started here, stopped before returning."""
    service = start_tickets(at, root, run)
    channel = CallerChannel(f"127.0.0.1:{service.server.port}")
    try:
        stub = service_pb2_grpc.TicketsServiceStub(channel)
        create_tickets(stub, args.warm_up, args.in_flight, args.create_seconds)
        ids, latencies, seconds, refused = create_tickets(
            stub, args.creates, args.in_flight, args.create_seconds
        )
        creating = Creating(
            requested=args.creates,
            in_flight=args.in_flight,
            created=len(ids),
            seconds=seconds,
            calls_per_s=len(ids) / seconds,
            latency_ms=latency_ms(latencies),
            refused=dict(refused),
        )
        console.print(f"created {len(ids)} tickets in {seconds:.1f} s")
        inbox = Inbox(broker.client_settings(at, f"dept-{DEPARTMENT}"), DEPARTMENT)
        hop = BareHop(broker.client_settings(at))
        try:
            tickets = ids[: args.warm_up + args.dispatches]
            to_inbox, rpc, bare = dispatch_to_inbox(
                stub, tickets, inbox, hop, args.warm_up, args.dispatch_seconds
            )
        finally:
            inbox.close()
            hop.close()
        console.print(f"dispatched {len(to_inbox)} tickets, each seen on {inbox.topic}")
        dispatching = Dispatching(
            samples=len(to_inbox),
            department=DEPARTMENT,
            to_inbox_ms=latency_ms(to_inbox),
            rpc_ms=latency_ms(rpc),
            bare_hop_ms=latency_ms(bare),
        )
        return creating, dispatching, service.service.rules
    finally:
        channel.close()
        service.close(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=2000, help="CreateTicket calls measured")
    parser.add_argument("--in-flight", type=int, default=16, help="CreateTicket calls at once")
    parser.add_argument("--create-seconds", type=float, default=60.0, help="at most this long creating")
    parser.add_argument("--dispatches", type=int, default=300, help="dispatch -> inbox samples")
    parser.add_argument("--dispatch-seconds", type=float, default=120.0, help="at most this long sampling")
    parser.add_argument("--warm-up", type=int, default=20, help="calls and dispatches not measured, first")
    parser.add_argument("--events", type=int, default=1_000_000, help="events replayed")
    parser.add_argument("--json", type=Path, help="also write the results here, as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=200)
    run = uuid.uuid4().hex[:8]
    began = time.monotonic()
    local_settings()  # the local CA and token signing key, made if missing: the broker and gRPC use them
    root = Path(tempfile.mkdtemp(prefix="bench-tickets-"))
    try:
        with own_broker(root) as at:
            servers = {"bootstrap_servers": broker.bootstrap_servers(at), "security": at.security}
            console.print(f"broker of this run on {servers['bootstrap_servers']}, {at.security}")
            creating, dispatching, rules = measure_service(at, root, run, args, console)
            replaying = measure_replay(broker.client_settings(at), rules, args.events, root, run)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = Result(creating, dispatching, replaying, time.monotonic() - began, servers)
    console.print(report(result))
    r = replaying
    console.print(
        f"replay: {r.replayed_events:,} events applied, {r.rebuilt_tickets:,} tickets rebuilt, "
        f"{r.quarantined} quarantined; the topic was written in {r.write_seconds:.1f} s; bare reads "
        f"before and after the store's: {r.bare_read_per_s[0]:,.0f} and {r.bare_read_per_s[1]:,.0f} records/s"
    )
    if creating.refused:
        console.print(f"refused CreateTicket calls: {creating.refused}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
