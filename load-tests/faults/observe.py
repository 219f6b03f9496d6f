"""Watching the logs while a fault plays: when each service made its first decision after a moment.

A ``Tail`` reads every new committed record of the topics it is given from the moment it starts,
noting when each arrived (``time.monotonic()``), so a scenario can ask "when did routing next make
an offer after the broker came back" without trusting any service's clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from services.platform.kafka import consumer_config
from services.platform.settings import KafkaSettings

# Where each service's decisions land: its own events topic, or for the KPIs, its folds' changelog.
DECISIONS = {
    "intake": "contacts.events.v1",
    "routing": "routing.events.v1",
    "agents": "agents.events.v1",
    "kpi": "kpi.contacts.v1",
    "tickets": "tickets.events.v1",
    "approvals": "approvals.events.v1",
}


@dataclass(frozen=True)
class Seen:
    at: float  # when the tail received it (time.monotonic)
    topic: str
    event_type: str
    made: float  # when its producer made it (the record's create time, seconds since the epoch)


class Tail:
    def __init__(self, kafka: KafkaSettings, topics: Iterable[str] = DECISIONS.values()) -> None:
        self._kafka = kafka
        self._topics = list(topics)
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-tail", daemon=True)

    def __enter__(self) -> Tail:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the tail of the decision topics did not open")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        consumer = Consumer(consumer_config(self._kafka, f"chaos-tail-{time.monotonic_ns()}"))
        try:
            start = []
            for topic in self._topics:
                for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                    _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                    start.append(TopicPartition(topic, partition, end))
            consumer.assign(start)
            self._ready.set()
            while not self._stop.is_set():
                for message in consumer.consume(500, timeout=0.1):
                    if message.error() is not None:
                        continue
                    headers = dict(message.headers() or ())
                    kind = headers.get("event_type", b"").decode() or "record"
                    made = message.timestamp()[1] / 1000
                    with self._lock:
                        self._seen.append(Seen(time.monotonic(), message.topic(), kind, made))
        finally:
            consumer.close()

    def first_after(self, service: str, since: float, timeout_s: float = 120.0) -> float | None:
        """Seconds from ``since`` (time.monotonic) to the first decision of ``service`` made after it
        and seen (None: none came). Made after: a record committed by a killed instance just before it
        died may still arrive; its create time says it is not the successor's."""
        topic = DECISIONS[service]
        made_after = time.time() - (time.monotonic() - since)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = [
                    s.at for s in self._seen if s.topic == topic and s.at >= since and s.made >= made_after
                ]
            if found:
                return min(found) - since
            time.sleep(0.05)
        return None
