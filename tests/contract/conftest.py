"""Fixtures of the contract suites: event logs over the fake and over Kafka (``logs``), and the KPI
store on the embedded engine and over HTTP.

The HTTP path runs against ``CC_TEST_CLICKHOUSE_URL`` when it is set (a real ClickHouse server,
e.g. ``http://user:password@127.0.0.1:8123``), else against the test stand-in in a child process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from services.kpi.store import KpiStore, open_kpi_store
from services.platform.envelope import EventRegistry
from services.platform.eventstore import EventLog, EventStore, StateListener
from services.platform.kafka import KafkaEventLog
from services.platform.settings import ClickHouseSettings, KafkaSettings
from tests.support import tally
from tests.support.clickhouse_http_standin import running_standin
from tests.support.embedded_clickhouse import drop_database, unique_database
from tests.support.memory import InMemoryBroker, InMemoryEventLog


@pytest.fixture(scope="session")
def clickhouse_http_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSettings]:
    """Where the HTTP path connects: the real server named by the environment, or the stand-in."""
    url = os.environ.get("CC_TEST_CLICKHOUSE_URL")
    if url:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        yield ClickHouseSettings(
            url=urlunsplit((parts.scheme, netloc, "", "", "")),
            username=parts.username or "default",
            password=parts.password or "",
        )
        return
    with running_standin(tmp_path_factory.mktemp("clickhouse-standin")) as standin_url:
        yield ClickHouseSettings(url=standin_url)


@pytest.fixture(params=["embedded", "http"])
def kpi_settings(request: pytest.FixtureRequest) -> ClickHouseSettings:
    """Settings for a fresh database on one path; every test using it runs once per path."""
    if request.param == "embedded":
        data_dir: Path = request.getfixturevalue("embedded_clickhouse_dir")
        return ClickHouseSettings(url=None, data_dir=data_dir, database=unique_database())
    http: ClickHouseSettings = request.getfixturevalue("clickhouse_http_settings")
    return http.model_copy(update={"database": unique_database()})


@pytest.fixture
def kpi_store(kpi_settings: ClickHouseSettings) -> Iterator[KpiStore]:
    store = open_kpi_store(kpi_settings)
    try:
        store.apply_schema()
        yield store
    finally:
        drop_database(store)
        store.close()


@dataclass
class LogFactory:
    """Makes event logs over one shared backing log, as successive processes of one service would."""

    make: Callable[[str], EventLog]
    read_topic: Callable[[str], list]
    side_topic: str
    table_topic: str
    opened: list[EventStore] = field(default_factory=list)

    def store(
        self,
        writer_id: str = "tally-writer",
        *,
        state_version: int = 1,
        snapshot_every: int = 0,
        forget_closed_after: timedelta | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        registry: EventRegistry | None = None,
        listeners: tuple[StateListener, ...] = (),
    ) -> EventStore:
        store = EventStore(
            self.make(writer_id),
            registry or tally.registry(),
            [tally.kind(state_version), tally.totals_table(self.table_topic)],
            snapshot_every=snapshot_every,
            forget_closed_after=forget_closed_after,
            clock=clock,
        )
        for listener in listeners:
            store.add_listener(listener)
        store.start()
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close(grace_s=1.0)


def _memory_factory() -> LogFactory:
    broker = InMemoryBroker()
    return LogFactory(
        make=lambda writer_id: InMemoryEventLog(broker, "tally.events", "tally.snapshots", writer_id),
        read_topic=broker.records,
        side_topic="tally.side",
        table_topic="tally.totals",
    )


def _kafka_factory(kafka: KafkaSettings) -> Iterator[LogFactory]:
    suffix = uuid.uuid4().hex[:8]
    events, snapshots, side = f"tally.events.{suffix}", f"tally.snapshots.{suffix}", f"tally.side.{suffix}"
    table = f"tally.totals.{suffix}"
    admin = AdminClient(kafka.client_config())
    futures = admin.create_topics(
        [
            NewTopic(events, 3, 1),
            NewTopic(snapshots, 1, 1, config={"cleanup.policy": "compact", "max.message.bytes": "16777216"}),
            NewTopic(side, 1, 1),
            NewTopic(table, 1, 1, config={"cleanup.policy": "compact"}),
        ]
    )
    for future in futures.values():
        future.result(30)
    logs: list[KafkaEventLog] = []

    def make(writer_id: str) -> EventLog:
        log = KafkaEventLog(kafka, events, snapshots, f"{writer_id}.{suffix}")
        logs.append(log)
        return log

    def read_topic(topic: str) -> list:
        return list(KafkaEventLog(kafka, topic, topic, f"reader.{suffix}").replay({}))

    factory = LogFactory(make=make, read_topic=read_topic, side_topic=side, table_topic=table)
    yield factory
    factory.close()
    for log in logs:
        log.close()
    for future in admin.delete_topics([events, snapshots, side, table]).values():
        future.result(30)


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def logs(request: pytest.FixtureRequest) -> Iterator[LogFactory]:
    if request.param == "memory":
        yield _memory_factory()
    else:
        broker = request.getfixturevalue("kafka_broker")
        yield from _kafka_factory(broker.kafka)
