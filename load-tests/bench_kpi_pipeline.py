"""The KPI pipeline under load: events/s through the projector into ClickHouse, and KPI freshness.

A producer process writes whole contacts (intake's, routing's and an agent's events, 14 per
answered call, with real contracts and versions) at a constant rate to topics of the benchmark's
own; the KPI projector (the same code as the KPI service, on the platform's consumer runner, folds
in changelog tables of the benchmark's own) projects them into an embedded ClickHouse under a
temporary folder. Freshness is measured per event: from its ``occurred_at`` (stamped when produced)
to the moment the insert that carries its fact returned, after which a query sees it.

The same run then reads every produced record with a bare confluent-kafka consumer (no decoding):
the ceiling on this broker, to compare against. Bounded in count and time; loopback only; the
benchmark's topics are deleted afterwards.

    python load-tests/bench_kpi_pipeline.py --rate 50 --rate 200 --rate 400 --seconds 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as routing_ev
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from services.kpi.handlers import KpiProjector, kinds, registry
from services.kpi.store import open_kpi_store
from services.platform.consumer import ConsumerRunner
from services.platform.envelope import Cause, Envelope, encode, make_envelope
from services.platform.eventstore import EventStore, Transaction
from services.platform.kafka import KafkaEventLog, KafkaSource
from services.platform.settings import ClickHouseSettings, KafkaSettings, Settings

PARTITIONS = 6
AGENTS = 500
EVENTS_PER_CONTACT = 14
QUEUE = "bench"
S = agent_ev.AgentState


def _contact_events(n: int, agent_version: dict[str, int]) -> list[tuple[str, str, str, int, Any]]:
    """(context, aggregate type, id, version, payload) of one answered call, in the order they happen."""
    contact, agent = f"b-{n}", f"agent-{n % AGENTS}"
    offer = f"{contact}-o1"
    voice = types_pb2.Channel.CHANNEL_VOICE

    def agent_event(payload: Any) -> tuple[str, str, str, int, Any]:
        agent_version[agent] = agent_version.get(agent, 0) + 1
        return ("agents", "Agent", agent, agent_version[agent], payload)

    def changed(before: int, after: int) -> agent_ev.AgentStateChanged:
        return agent_ev.AgentStateChanged(
            agent_id=agent, previous_state=before, new_state=after, contact_id=contact, queue_id=QUEUE
        )

    def intake(version: int, payload: Any) -> tuple[str, str, str, int, Any]:
        return ("intake", "Contact", contact, version, payload)

    def routing(version: int, payload: Any) -> tuple[str, str, str, int, Any]:
        return ("routing", "QueueEntry", contact, version, payload)

    connected = routing_ev.ContactConnected(
        contact_id=contact, queue_id=QUEUE, agent_id=agent, offer_id=offer
    )
    connected.waited.FromSeconds(2)
    wrapped = agent_ev.WrapUpCompleted(
        agent_id=agent, contact_id=contact, queue_id=QUEUE, disposition_code="ok"
    )
    return [
        intake(1, intake_ev.ContactStarted(contact_id=contact, channel=voice)),
        intake(2, intake_ev.IvrSelectionRecorded(contact_id=contact, queue_id=QUEUE)),
        intake(3, intake_ev.RoutingRequested(contact_id=contact, queue_id=QUEUE)),
        routing(1, routing_ev.ContactQueued(contact_id=contact, queue_id=QUEUE, visit=1)),
        routing(
            2, routing_ev.ContactOffered(contact_id=contact, queue_id=QUEUE, agent_id=agent, offer_id=offer)
        ),
        agent_event(changed(S.AGENT_STATE_READY, S.AGENT_STATE_RESERVED)),
        routing(3, routing_ev.OfferAccepted(contact_id=contact, agent_id=agent, offer_id=offer)),
        agent_event(changed(S.AGENT_STATE_RESERVED, S.AGENT_STATE_ON_CONTACT)),
        routing(4, connected),
        intake(4, intake_ev.ContactAnswered(contact_id=contact, agent_id=agent, queue_id=QUEUE)),
        intake(5, intake_ev.ContactEnded(contact_id=contact, agent_id=agent)),
        agent_event(changed(S.AGENT_STATE_ON_CONTACT, S.AGENT_STATE_WRAP_UP)),
        agent_event(wrapped),
        agent_event(changed(S.AGENT_STATE_WRAP_UP, S.AGENT_STATE_READY)),
    ]


def produce(kafka: KafkaSettings, topics: dict[str, str], rate: float, seconds: float, first: int) -> None:
    """Whole contacts at ``rate`` contacts/s for ``seconds``, each event stamped when it is sent."""
    producer = Producer({**kafka.client_config(), "linger.ms": 2, "enable.idempotence": True})
    events = registry()
    agent_version: dict[str, int] = {}
    started = time.perf_counter()
    for n in range(first, first + int(rate * seconds)):
        due = started + (n - first) / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        for context, kind, aggregate_id, version, payload in _contact_events(n, agent_version):
            envelope = make_envelope(
                payload,
                registry=events,
                aggregate_type=kind,
                aggregate_id=aggregate_id,
                aggregate_version=version,
                occurred_at=datetime.now(UTC),
                cause=Cause.request(f"bench-{n}-{kind}-{version}"),
            )
            key, value, headers = encode(envelope)
            producer.produce(topics[context], value, key, headers=headers)
        producer.poll(0)
    producer.flush()


class TimedProjector(KpiProjector):
    """The KPI projector, noting for each event how long after it occurred its fact became visible."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.latencies_ms: list[float] = []
        self.events = 0
        self._occurred: list[datetime] = []
        self._tx: Transaction | None = None

    def project(self, envelope: Envelope, tx: Transaction) -> None:
        if tx is not self._tx:
            self._tx, self._occurred = tx, []
        self._occurred.append(envelope.occurred_at)
        super().project(envelope, tx)

    def flush(self, tx: Transaction) -> None:
        super().flush(tx)  # returns once ClickHouse has the batch's facts
        visible = datetime.now(UTC)
        self.latencies_ms.extend((visible - at) / timedelta(milliseconds=1) for at in self._occurred)
        self.events += len(self._occurred)
        self._occurred = []


def raw_rate(kafka: KafkaSettings, topics: list[str], events: int) -> float:
    consumer = Consumer(
        {**kafka.client_config(), "group.id": uuid.uuid4().hex, "isolation.level": "read_committed"}
    )
    consumer.assign([TopicPartition(topic, p, 0) for topic in topics for p in range(PARTITIONS)])
    started, seen, first = 0.0, 0, 0
    while seen < events:
        got = sum(1 for m in consumer.consume(1000, timeout=1) if m.error() is None)
        if got and not first:  # timed from the first batch: joining and the first fetch are not reading
            started, first = time.perf_counter(), got
        seen += got
    consumer.close()
    return (seen - first) / (time.perf_counter() - started)


def _percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="answered calls per second (repeat)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rates = args.rate or [50.0, 200.0, 400.0]
    kafka = Settings().kafka
    admin = AdminClient(kafka.client_config())
    suffix = uuid.uuid4().hex[:6]
    sources = {context: f"bench.kpi.{context}.{suffix}" for context in ("intake", "routing", "agents")}
    tables = tuple(f"bench.kpi.folds.{name}.{suffix}" for name in ("contacts", "agents", "queues"))
    new = [NewTopic(t, PARTITIONS, 1) for t in sources.values()]
    new += [NewTopic(t, 1, 1, config={"cleanup.policy": "compact"}) for t in tables]
    for future in admin.create_topics(new).values():
        future.result(30)
    results = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            facts = open_kpi_store(ClickHouseSettings(data_dir=Path(folder), database="bench"))
            facts.apply_schema()
            store = EventStore(
                KafkaEventLog(kafka, None, None, f"bench-kpi-{suffix}"), registry(), kinds(tables)
            )
            source = KafkaSource(kafka, f"bench-kpi-{suffix}", list(sources.values()))
            projector = TimedProjector(store, facts, source.read_horizon)
            store.start()
            runner = ConsumerRunner(
                "bench-kpi", source, store, registry(), projector.project, after_batch=projector.flush
            )
            stop = threading.Event()
            consuming = threading.Thread(target=runner.run, args=(stop,), daemon=True)
            consuming.start()
            produced = 0
            for rate in rates:
                projector.latencies_ms.clear()
                before, started = projector.events, time.perf_counter()
                sender = multiprocessing.get_context("spawn").Process(
                    target=produce, args=(kafka, sources, rate, args.seconds, produced)
                )
                sender.start()
                sender.join()
                print(f"{rate:.0f} calls/s: produced, exit code {sender.exitcode}", flush=True)
                sent = int(rate * args.seconds) * EVENTS_PER_CONTACT
                produced += int(rate * args.seconds)
                while projector.events - before < sent and time.perf_counter() - started < args.seconds * 6:
                    time.sleep(0.05)
                done = projector.events - before
                print(f"{rate:.0f} calls/s: {done:,} of {sent:,} events projected", flush=True)
                took = time.perf_counter() - started
                lat = list(projector.latencies_ms)
                results.append((rate, sent / args.seconds, done / took, lat, done == sent))
            stop.set()
            consuming.join(30)
            [row] = facts.query(
                "SELECT count() AS n FROM contact_facts FINAL WHERE visit = 1 AND disposition != ''"
            )
            ceiling = raw_rate(kafka, list(sources.values()), produced * EVENTS_PER_CONTACT)
            store.close()
            facts.close()
    finally:
        admin.delete_topics([*sources.values(), *tables])
    table = Table(
        title=f"KPI pipeline: {args.seconds:.0f} s per rate, {EVENTS_PER_CONTACT} events per answered call"
    )
    for column in (
        "calls/s",
        "events/s offered",
        "events/s projected",
        "freshness p50",
        "p99",
        "max",
        "all in",
    ):
        table.add_column(column, justify="right")
    for rate, offered, achieved, lat, complete in results:
        table.add_row(
            f"{rate:.0f}",
            f"{offered:,.0f}",
            f"{achieved:,.0f}",
            f"{statistics.median(lat):.0f} ms" if lat else "-",
            f"{_percentile(lat, 99):.0f} ms" if lat else "-",
            f"{max(lat):.0f} ms" if lat else "-",
            "yes" if complete else "NO",
        )
    console = Console(width=120)
    console.print(table)
    console.print(
        f"ceiling, same run and broker: a bare confluent-kafka consumer read all "
        f"{produced * EVENTS_PER_CONTACT:,} records (no decoding) at {ceiling:,.0f} events/s; "
        f"answered calls with complete facts: {row['n']:,}"
    )


if __name__ == "__main__":
    main()
