"""Event store append throughput and replay rate on the real broker, against raw confluent-kafka.

Appends N events to fresh topics through the kernel's EventStore from ``--threads`` concurrent
callers (units of work of ``--batch`` events; concurrent units share a group commit), then writes
the same bytes with a bare transactional producer, one transaction per unit, from one caller:
the baseline a store without group commit would approach. raw/store > 1 means the store is
faster. Then a new store replays the topic, as a restarting service would. Bounded in count;
loopback only.

    python load-tests/bench_event_store.py --events 4000 --batch 1 --threads 1 --threads 16
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from services.platform.envelope import Cause
from services.platform.eventstore import EventStore
from services.platform.kafka import KafkaEventLog, producer_config
from services.platform.settings import Settings
from tests.support import tally


def _topics(admin: AdminClient, *names: str) -> None:
    for future in admin.create_topics([NewTopic(name, 6, 1) for name in names]).values():
        future.result(30)


def bench_store(store: EventStore, events: int, batch: int, aggregates: int, threads: int) -> float:
    """``threads`` callers (gRPC workers, say) each append units of ``batch`` events to own aggregates."""

    def caller(worker: int) -> None:
        for unit in range(events // batch // threads):
            with store.transaction() as tx:
                for n in range(batch):
                    tally_id = f"t-{worker}-{(unit * batch + n) % (aggregates // threads)}"
                    version = tx.load("Tally", tally_id).version
                    tx.append(
                        "Tally",
                        tally_id,
                        version,
                        [tally.ItemAdded(item="sku", quantity=1)],
                        Cause.request(f"bench-{worker}-{unit}-{n}"),
                    )

    workers = [threading.Thread(target=caller, args=(worker,)) for worker in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def bench_raw(
    producer: Producer, topic: str, events: int, batch: int, aggregates: int, value: bytes
) -> float:
    started = time.perf_counter()
    for unit in range(events // batch):
        producer.begin_transaction()
        for n in range(batch):
            producer.produce(topic, value, f"t-{(unit * batch + n) % aggregates}".encode())
        producer.commit_transaction()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, action="append", help="events per transaction (repeatable)")
    parser.add_argument("--aggregates", type=int, default=480)
    parser.add_argument("--threads", type=int, action="append", help="concurrent callers (repeatable)")
    args = parser.parse_args()
    batches = args.batch or [1, 10]
    thread_counts = args.threads or [1, 8]
    settings = Settings()
    kafka = settings.kafka
    admin = AdminClient(kafka.client_config())
    console = Console()
    table = Table(
        title=f"event store vs raw transactional producer, {args.events} events, {kafka.bootstrap_servers}"
    )
    for column in (
        "events/unit",
        "callers",
        "store ev/s",
        "commits",
        "raw ev/s",
        "raw/store time",
        "replay ev/s",
    ):
        table.add_column(column, justify="right")

    for batch, threads in ((b, t) for b in batches for t in thread_counts):
        suffix = uuid.uuid4().hex[:8]
        events, snapshots, raw = f"bench.events.{suffix}", f"bench.snapshots.{suffix}", f"bench.raw.{suffix}"
        _topics(admin, events, snapshots, raw)
        store = EventStore(
            KafkaEventLog(kafka, events, snapshots, f"bench-{suffix}"), tally.registry(), [tally.kind()]
        )
        store.start()
        store_s = bench_store(store, args.events, batch, args.aggregates, threads)
        written = args.events // batch // threads * threads * batch
        store.close()

        producer = Producer(producer_config(kafka, f"bench-raw-{suffix}"))
        producer.init_transactions(30)
        sample = next(iter(KafkaEventLog(kafka, events, events, f"sample-{suffix}").replay({})))
        raw_s = bench_raw(producer, raw, written, batch, args.aggregates, sample.value or b"")

        replayer = EventStore(
            KafkaEventLog(kafka, events, snapshots, f"bench-{suffix}"), tally.registry(), [tally.kind()]
        )
        started = time.perf_counter()
        replayer.start()
        replay_s = time.perf_counter() - started
        assert replayer.replayed_events == written

        table.add_row(
            str(batch),
            str(threads),
            f"{written / store_s:,.0f}",
            f"{store.commits:,}",
            f"{written / raw_s:,.0f}",
            f"{raw_s / store_s:.2f}",
            f"{replayer.replayed_events / replay_s:,.0f}",
        )
        for future in admin.delete_topics([events, snapshots, raw]).values():
            future.result(30)
    console.print(table)


if __name__ == "__main__":
    main()
