"""Which runtime carries the KPI projections: faust-streaming or the platform's consumer runner.

Writes N event envelopes to a fresh topic, then consumes them four ways, each doing the same work
per event (decode the envelope, update a changelog-backed table keyed by the aggregate id):

- raw confluent-kafka consume, decoding nothing: the ceiling on this broker;
- the platform's ConsumerRunner, the table committed with the offsets in one transaction per batch;
- faust, processing_guarantee at_least_once and exactly_once, one event at a time (a faust table can
  only be changed inside per-event iteration: ``take()`` batches refuse table writes).

Bounded in count; loopback only; the topics it creates are deleted afterwards.

    python load-tests/bench_kpi_runtime.py --events 20000
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from services.platform.consumer import ConsumerRunner
from services.platform.envelope import Cause, EventRegistry, decode, encode, make_envelope
from services.platform.eventstore import AggregateKind, EventStore
from services.platform.kafka import KafkaEventLog, KafkaSource
from services.platform.settings import KafkaSettings, Settings
from tests.support import tally

PARTITIONS = 6
KEYS = 5_000


def _registry() -> EventRegistry:
    return tally.registry()


def produce(kafka: KafkaSettings, topic: str, events: int) -> None:
    producer = Producer({**kafka.client_config(), "linger.ms": 5})
    registry = _registry()
    for n in range(events):
        envelope = make_envelope(
            tally.ItemAdded(item="sku", quantity=1),
            registry=registry,
            aggregate_type="Tally",
            aggregate_id=f"c-{n % KEYS}",
            aggregate_version=n // KEYS + 1,
            occurred_at=datetime.now(UTC),
            cause=Cause.request(f"bench-{n}"),
        )
        key, value, headers = encode(envelope)
        producer.produce(topic, value, key, headers=headers)
        if n % 10_000 == 0:
            producer.poll(0)
    producer.flush()


def raw_rate(kafka: KafkaSettings, topic: str, events: int) -> float:
    consumer = Consumer(
        {**kafka.client_config(), "group.id": uuid.uuid4().hex, "isolation.level": "read_committed"}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    started, seen = time.perf_counter(), 0
    while seen < events:
        seen += sum(1 for m in consumer.consume(1000, timeout=1) if m.error() is None)
    consumer.close()
    return events / (time.perf_counter() - started)


def runner_rate(kafka: KafkaSettings, topic: str, events: int, admin: AdminClient) -> float:
    suffix = uuid.uuid4().hex[:6]
    own, snapshots, table_topic = (
        f"bench.runner.{suffix}",
        f"bench.runner.snap.{suffix}",
        f"bench.runner.tab.{suffix}",
    )
    _create(admin, [own, snapshots, table_topic], compact=table_topic)
    try:
        counts = AggregateKind.table("Count", lambda _key: 0, table_topic, lambda n: str(n).encode(), int)
        store = EventStore(KafkaEventLog(kafka, own, snapshots, f"bench-{suffix}"), _registry(), [counts])
        store.start()

        def count(envelope, tx) -> None:
            tx.put("Count", envelope.aggregate_id, tx.load("Count", envelope.aggregate_id).state + 1)

        runner = ConsumerRunner(
            "bench",
            KafkaSource(kafka, f"bench-{suffix}", [topic]),
            store,
            _registry(),
            count,
            dedup_by_store=False,
        )
        started, seen = None, 0
        while seen < events:
            got = runner.run_once()
            if got and started is None:
                started = time.perf_counter()
            seen += got
        rate = events / (time.perf_counter() - started)
        runner.close()
        store.close()
        return rate
    finally:
        admin.delete_topics([own, snapshots, table_topic])


def faust_rate(topic: str, events: int, guarantee: str) -> float:
    with tempfile.TemporaryDirectory() as datadir:
        done = subprocess.run(
            [sys.executable, __file__, "--faust-worker", topic, str(events), guarantee, datadir],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=datadir,
        )
        report = Path(datadir) / "rate"
        if report.exists():
            return float(report.read_text())
    raise RuntimeError(f"the faust worker reported no rate:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def faust_worker(topic: str, events: int, guarantee: str, datadir: str) -> None:
    import faust  # only the worker process imports faust: it takes over the process

    kafka = Settings().kafka
    app = faust.App(
        f"bench-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{kafka.bootstrap_servers}",
        broker_credentials=_faust_credentials(kafka),
        processing_guarantee=guarantee,
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        datadir=datadir,
    )
    source = app.topic(topic, value_serializer="raw", key_serializer="raw")
    counts = app.Table("counts", default=int, partitions=PARTITIONS)
    registry = _registry()
    progress = {"seen": 0, "started": 0.0}

    @app.agent(source)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            progress["started"] = progress["started"] or time.perf_counter()
            envelope = decode(event.message.value, event.message.headers, registry)
            counts[envelope.aggregate_id] += 1
            progress["seen"] += 1
            if progress["seen"] >= events:
                # faust turns print() into log lines: the rate goes to a file the caller reads.
                rate = events / (time.perf_counter() - progress["started"])
                (Path(datadir) / "rate").write_text(f"{rate:.1f}")
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "error"]
    app.main()


def _faust_credentials(kafka: KafkaSettings) -> Any:
    """faust's (aiokafka's) view of our client settings: SCRAM over TLS as the admin, or none."""
    import faust

    if not kafka.uses_sasl:
        return None
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.password(),
        ssl_context=ssl.create_default_context(cafile=kafka.ssl_ca_location),
        mechanism=kafka.sasl_mechanism,
    )


def _create(admin: AdminClient, topics: list[str], compact: str = "") -> None:
    new = [
        NewTopic(
            name,
            PARTITIONS if name != compact else 1,
            1,
            config={"cleanup.policy": "compact"} if name == compact else {},
        )
        for name in topics
    ]
    for future in admin.create_topics(new).values():
        future.result(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    kafka = Settings().kafka
    admin = AdminClient(kafka.client_config())
    topic = f"bench.kpi.source.{uuid.uuid4().hex[:6]}"
    _create(admin, [topic])
    try:
        produce(kafka, topic, args.events)
        raw = raw_rate(kafka, topic, args.events)
        rows = [
            ("raw confluent-kafka consume (no decode): the ceiling", raw),
            (
                "platform ConsumerRunner + changelog table, exactly once",
                runner_rate(kafka, topic, args.events, admin),
            ),
            ("faust at_least_once + table, per event", faust_rate(topic, args.events, "at_least_once")),
            ("faust exactly_once + table, per event", faust_rate(topic, args.events, "exactly_once")),
        ]
    finally:
        admin.delete_topics([topic])
    table = Table(title=f"KPI runtime: {args.events:,} events, decode + table update per event")
    for column in ("runtime", "events/s", "of the ceiling"):
        table.add_column(column, justify="right" if column != "runtime" else "left")
    for name, rate in rows:
        table.add_row(name, f"{rate:,.0f}", f"{rate / raw:.1%}")
    Console(width=120).print(table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--faust-worker":
        faust_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
