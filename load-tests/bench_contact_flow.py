"""Contacts per second through intake, routing and agents, and how fast a queued contact is offered.

Starts the local services, then for each ``--rate`` runs the simulator for ``--seconds`` with calls
arriving at that constant rate, enough agents that one is nearly always free, and no abandons,
breaks, misses or transfers, so what is measured is the system, not the queue. From the event
topics (read_committed, like any consumer) it measures per contact:

- queued -> offered: ContactQueued to ContactOffered, as routing stamped them (the ACD's own delay);
- requested -> offer seen: intake's RoutingRequested to a consumer receiving the ContactOffered
  (two transactional hops: intake's commit, routing's consume-decide-commit, then visibility).

Measuring begins after a warm-up at the first rate (``--warm-up-seconds``). The baseline, in the
same run on the same broker: one bare transactional produce, read back by a
read_committed consumer (one hop). Bounded in count and time; loopback only.

The load generator is measured apart: its own CPU (this process: the simulator and the watcher),
how late its callers arrived against the plan (p99) and how long its calls waited for a free worker
(p99); and each service's CPU, as a share of one core, so the table shows which one saturates.

    python load-tests/bench_contact_flow.py --rate 5 --rate 10 --rate 20 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as routing_ev
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table
from simulator.driver import Endpoints, Simulation
from simulator.measure import CpuShares, describe, percentile
from simulator.scenario import steady

from services import launcher
from services.platform import broker
from services.platform.envelope import EventRegistry, PoisonEvent, decode
from services.platform.kafka import consumer_config, producer_config
from services.platform.settings import KafkaSettings, Settings

TOPICS = ("contacts.events.v1", "routing.events.v1")


@dataclass
class Timeline:
    requested: dict[str, datetime] = field(default_factory=dict)
    queued: dict[str, datetime] = field(default_factory=dict)
    offered: dict[str, datetime] = field(default_factory=dict)
    offer_seen: dict[str, datetime] = field(default_factory=dict)
    connected: dict[str, datetime] = field(default_factory=dict)


class Watcher:
    """Reads the contact and routing topics from now on and notes when each contact passed each point."""

    def __init__(self, kafka: KafkaSettings, prefix: str) -> None:
        self.timeline = Timeline()
        self._prefix = prefix.encode()
        self._registry = EventRegistry.of(intake_ev, routing_ev)
        self._consumer = Consumer(consumer_config(kafka, f"bench-{uuid.uuid4().hex[:8]}"))
        assignment = []
        for topic in TOPICS:
            for partition in self._consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]
                assignment.append(TopicPartition(topic, partition, high))
        self._consumer.assign(assignment)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t = self.timeline
        while not self._stop.is_set():
            for message in self._consumer.consume(1000, timeout=0.1):
                seen = datetime.now(UTC)
                if message.error() is not None or not (message.key() or b"").startswith(self._prefix):
                    continue
                try:
                    envelope = decode(message.value(), message.headers(), self._registry)
                except PoisonEvent:
                    continue
                contact, at = envelope.aggregate_id, envelope.occurred_at
                match envelope.event_type:
                    case "RoutingRequested":
                        t.requested.setdefault(contact, at)
                    case "ContactQueued":
                        t.queued.setdefault(contact, at)
                    case "ContactOffered":
                        if contact not in t.offered:
                            t.offered[contact], t.offer_seen[contact] = at, seen
                    case "ContactConnected":
                        t.connected.setdefault(contact, at)
        self._consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _ms(values: list[float]) -> tuple[float, float]:
    """Median and p99 in milliseconds."""
    return percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000


def baseline_hop(kafka: KafkaSettings, count: int = 300) -> tuple[float, float]:
    """One bare transactional produce, seen by a read_committed consumer: median and p99 in ms.

    On a topic of its own, shaped like a context's events topic: never into a context's topic,
    whose owner would rightly refuse to start over records it cannot apply."""
    topic = f"bench.baseline.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    try:
        return _hop(kafka, topic, count)
    finally:
        admin.delete_topics([topic])[topic].result(30)


def _hop(kafka: KafkaSettings, topic: str, count: int) -> tuple[float, float]:
    producer = Producer(producer_config(kafka, f"bench-baseline-{uuid.uuid4().hex[:8]}"))
    producer.init_transactions(30)
    consumer = Consumer(consumer_config(kafka, f"bench-baseline-{uuid.uuid4().hex[:8]}"))
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign(
        [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
            for p in partitions
        ]
    )
    key = f"bench-baseline-{uuid.uuid4().hex[:8]}".encode()
    samples = []
    for n in range(count):
        sent = time.perf_counter()
        producer.begin_transaction()
        producer.produce(topic, b"", key, headers=[("bench", str(n).encode())])
        producer.commit_transaction()
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            message = consumer.poll(1)
            if message is not None and message.error() is None and message.key() == key:
                samples.append(time.perf_counter() - sent)
                break
        else:
            raise TimeoutError(f"baseline record {n} not seen on {topic} within 30 s")
        time.sleep(0.01)
    consumer.close()
    return _ms(samples)


@dataclass
class Result:
    rate: float
    arrived: int
    achieved_rate: float
    connected: int
    connected_per_s: float
    unoffered: int
    queued_to_offered: tuple[float, float]
    requested_to_seen: tuple[float, float]
    errors: dict[str, int]
    generator_cpu: float
    arrival_late_p99_ms: float
    send_wait_p99_ms: float
    service_cpu: dict[str, float]


def run_rate(
    endpoints: Endpoints, rate: float, seconds: float, agents: int, seed: int, pids: dict[str, int]
) -> Result:
    scenario = steady(rate, seconds, agents, seed)
    sim = Simulation(scenario, endpoints, workers=256)  # enough that it never holds a call back
    sim.setup()
    watcher = Watcher(endpoints.kafka, sim.run_id)
    started, cpu = time.monotonic(), time.process_time()
    services_cpu = CpuShares(pids)
    sim.run(drain_s=30)
    elapsed = time.monotonic() - started
    generator_cpu = (time.process_time() - cpu) / elapsed
    service_cpu = services_cpu.shares()
    sim.teardown()
    time.sleep(1.0)
    watcher.close()
    t = watcher.timeline
    ids = [contact.contact_id for contact in sim.contacts.values()]
    queued_to_offered = [
        (t.offered[c] - t.queued[c]).total_seconds() for c in ids if c in t.offered and c in t.queued
    ]
    requested_to_seen = [
        (t.offer_seen[c] - t.requested[c]).total_seconds()
        for c in ids
        if c in t.offer_seen and c in t.requested
    ]
    connected_times = sorted(t.connected[c] for c in ids if c in t.connected)
    span = (connected_times[-1] - connected_times[0]).total_seconds() if len(connected_times) > 1 else 0.0
    return Result(
        rate=rate,
        arrived=sim.tally.arrivals,
        achieved_rate=sim.tally.arrivals / min(elapsed, scenario.duration_s),
        connected=len(connected_times),
        connected_per_s=(len(connected_times) - 1) / span if span else 0.0,
        unoffered=sum(1 for c in ids if c not in t.offered),
        queued_to_offered=_ms(queued_to_offered),
        requested_to_seen=_ms(requested_to_seen),
        errors=dict(sim.tally.errors),
        generator_cpu=generator_cpu,
        arrival_late_p99_ms=percentile(sim.tally.arrival_late_s, 0.99) * 1000,
        send_wait_p99_ms=percentile(sim.tally.send_wait_s, 0.99) * 1000,
        service_cpu=service_cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="arrivals per second (repeatable)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--agents-per-rate", type=float, default=5.0, help="agents per contact/s offered")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--reuse-services", action="store_true", help="use services already running")
    parser.add_argument("--json", type=Path, help="also write the results here, as JSON")
    parser.add_argument(
        "--warm-up-seconds",
        type=float,
        default=20.0,
        help="calls at the first rate, not measured, before anything is (a fresh broker's JVM is slow)",
    )
    args = parser.parse_args()
    rates = args.rate or [5.0, 10.0, 20.0]
    console = Console(width=160)
    settings = Settings()
    kafka = settings.kafka
    running = [] if args.reuse_services else launcher.start_all()
    try:
        if running:
            launcher.wait_healthy(running)
        addresses = launcher.addresses()
        endpoints = Endpoints(addresses["intake"], addresses["routing"], addresses["agents"], kafka)

        # An agent is busy about two seconds a contact (answer, talk, wrap-up, the desktop's round trips):
        # enough agents that one is nearly always free, so the queue measures the system, not staffing.
        def agents(rate: float) -> int:
            return max(20, int(rate * args.agents_per_rate))

        if args.warm_up_seconds > 0:
            run_rate(endpoints, rates[0], args.warm_up_seconds, agents(rates[0]), args.seed + 1, {})
        base_median, base_p99 = baseline_hop(kafka)
        pids = {item.service.name: item.process.pid for item in running}
        broker_pid = broker.broker_pid(settings.broker)
        if broker_pid is not None:
            pids["broker"] = broker_pid
        results = [run_rate(endpoints, rate, args.seconds, agents(rate), args.seed, pids) for rate in rates]
    finally:
        launcher.stop_all(running)

    table = Table(
        title=f"contact flow, {args.seconds:.0f} s per rate, {args.agents_per_rate:g} agents per contact/s"
    )
    for column in (
        "offered rate/s",
        "arrived/s",
        "connected/s",
        "not offered",
        "queued->offered ms (p50 / p99)",
        "requested->offer seen ms (p50 / p99)",
        "p50 / baseline hop",
        "refused calls",
        "generator CPU / arrival late p99 / send wait p99",
        "services' CPU",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r.rate:g}",
            f"{r.achieved_rate:.1f}",
            f"{r.connected_per_s:.1f}",
            str(r.unoffered),
            f"{r.queued_to_offered[0]:.1f} / {r.queued_to_offered[1]:.1f}",
            f"{r.requested_to_seen[0]:.0f} / {r.requested_to_seen[1]:.0f}",
            f"{r.requested_to_seen[0] / base_median:.1f}x",
            ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())) or "0",
            f"{r.generator_cpu:.0%} / {r.arrival_late_p99_ms:.0f} ms / {r.send_wait_p99_ms:.0f} ms",
            describe(r.service_cpu),
        )
    console.print(table)
    console.print(
        f"baseline, one bare transactional produce -> read_committed consume on the same broker: "
        f"p50 {base_median:.1f} ms, p99 {base_p99:.1f} ms"
    )
    if args.json:
        baseline = {"p50_ms": base_median, "p99_ms": base_p99}
        args.json.write_text(json.dumps({"results": [asdict(r) for r in results], "baseline_hop": baseline}))


if __name__ == "__main__":
    main()
