"""The KPI service on the real broker and the embedded ClickHouse engine, as its own Kafka principal:
ticket events written to tickets.events.v1 become ticket, dispatch and state facts and the departments'
KPIs, once each, through a restart in the middle of a ticket's life."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from typing import Any, TypeVar

import pytest

from services.kpi import main as kpi_main
from services.kpi.store import open_kpi_store
from services.kpi.tickets import TicketFold, dispatch_rows, fold_ticket, ticket_row
from services.platform.envelope import Envelope, encode
from services.platform.eventstore import OutgoingRecord
from services.platform.kafka import KafkaEventLog
from services.platform.settings import ClickHouseSettings, GrpcSettings, Settings
from tests.support.center import T0
from tests.support.polling import eventually
from tests.unit.kpi.ticket_events import HOUR, TicketStory, closed_loop

T = TypeVar("T")
TOPIC = "tickets.events.v1"


class LiveKpi:
    """The KPI service in this process on the session's broker, over a fresh database."""

    def __init__(self, kafka_broker: Any, data_dir: Any) -> None:
        self.broker = kafka_broker
        self.run = uuid.uuid4().hex[:6]
        self.clickhouse = ClickHouseSettings(data_dir=data_dir, database=f"kpi_tickets_{self.run}")
        self.settings = Settings(
            kafka=kafka_broker.kafka_as("kpi"),
            grpc=GrpcSettings(address="127.0.0.1:0"),
            clickhouse=self.clickhouse,
            instance_id=f"kpi-tk-{self.run}",
        )
        self.process = kpi_main.start(self.settings)
        self.store = open_kpi_store(self.clickhouse)
        self.writer = KafkaEventLog(kafka_broker.kafka, TOPIC, None, f"test-tickets-{self.run}")
        self.writer.open()

    def restart(self) -> None:
        self.process.close(5)
        self.process = kpi_main.start(self.settings)

    def close(self) -> None:
        self.writer.close()
        self.process.close(5)
        self.store.command(f"DROP DATABASE IF EXISTS `{self.clickhouse.database}`")
        self.store.close()

    def write(self, events: Sequence[Envelope]) -> None:
        """The events on the tickets topic in one transaction, as the tickets service commits a unit."""
        records = []
        for envelope in events:
            key, value, headers = encode(envelope)
            records.append(OutgoingRecord(TOPIC, key, value, list(headers)))
        self.writer.commit(records, [])

    def facts(self, table: str, ticket_id: str, order_by: str) -> list[dict[str, Any]]:
        return self.store.query(
            f"SELECT * FROM {table} FINAL WHERE ticket_id = {{t:String}} ORDER BY {order_by}",
            {"t": ticket_id},
        )

    def ticket_version(self, ticket_id: str) -> int:
        rows = self.facts("ticket_facts", ticket_id, "ticket_id")
        return rows[0]["version"] if rows else 0

    def written_whole(self, story: TicketStory, dispatches: list[dict[str, Any]], intervals: int) -> None:
        """Until the story's last batch is in every table: a batch writes its tables one insert after
        another (ticket facts first, state intervals last), so none is read between two inserts."""
        eventually(
            lambda: (
                self.ticket_version(story.ticket_id),
                self.facts("dispatch_facts", story.ticket_id, "dispatch_id"),
                len(self.facts("ticket_state_intervals", story.ticket_id, "interval_id")),
            ),
            lambda seen: seen == (len(story.events), dispatches, intervals),
            "the ticket folded whole, every table written",
        )


@pytest.fixture
def live(kafka_broker: Any, embedded_clickhouse_dir: Any) -> Iterator[LiveKpi]:
    kpi = LiveKpi(kafka_broker, embedded_clickhouse_dir)
    yield kpi
    kpi.close()


def expected(story: TicketStory) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the fold makes of the story's events: the ticket's fact and its dispatches' facts."""
    fold = TicketFold(story.ticket_id)
    for envelope in story.events:
        fold, _ = fold_ticket(fold, envelope)
    row = ticket_row(fold)
    assert row is not None
    return row, sorted(dispatch_rows(fold), key=lambda fact: fact["dispatch_id"])


def test_a_tickets_closed_loop_on_the_broker_becomes_its_facts_and_its_departments_kpis(
    live: LiveKpi,
) -> None:
    housing, water = f"housing_{live.run}", f"water_{live.run}"
    story = closed_loop(f"t-{live.run}", housing=housing, water=water)

    live.write(story.events)

    ticket_id = story.ticket_id
    ticket, dispatches = expected(story)
    live.written_whole(story, dispatches, 12)
    assert live.facts("ticket_facts", ticket_id, "ticket_id") == [ticket]
    assert live.facts("dispatch_facts", ticket_id, "dispatch_id") == dispatches
    assert len(live.facts("ticket_state_intervals", ticket_id, "interval_id")) == 12
    rows = live.store.query(
        "SELECT * FROM kpi_departments(from = {f:DateTime64(3)}, to = {t:DateTime64(3)}) "
        "WHERE department IN ({h:String}, {w:String}) ORDER BY department",
        {"f": T0, "t": T0 + timedelta(days=30), "h": housing, "w": water},
    )
    assert [(row["department"], row["dispatches"], row["satisfaction_rate"]) for row in rows] == [
        (housing, 1, None),
        (water, 2, 0.5),
    ]
    [scored] = live.store.query(
        "SELECT * FROM kpi_department_scorecard(month = {m:Date}) WHERE department = {w:String}",
        {"m": date(2026, 12, 1), "w": water},
    )
    assert scored["weights_version"] == 1, "the weights the service wrote at start"


def test_a_kpi_service_restarted_mid_ticket_continues_its_facts_with_nothing_lost_or_doubled(
    live: LiveKpi,
) -> None:
    story = closed_loop(f"t-{live.run}", housing=f"housing_{live.run}", water=f"water_{live.run}")
    half = len(story.events) // 2
    live.write(story.events[:half])
    eventually(lambda: live.ticket_version(story.ticket_id), lambda v: v == half, "the first half folded")

    live.restart()
    live.write(story.events[half - 5 :])  # the last five again, as a producer's retry would

    ticket, dispatches = expected(story)
    live.written_whole(story, dispatches, 12)
    assert live.facts("ticket_facts", story.ticket_id, "ticket_id") == [ticket]
    assert live.facts("dispatch_facts", story.ticket_id, "dispatch_id") == dispatches
    intervals = live.facts("ticket_state_intervals", story.ticket_id, "started_at, interval_id")
    assert len(intervals) == 12
    assert sum(row["seconds"] for row in intervals) == 12 * 24 * HOUR


def test_the_kpi_service_may_read_the_tickets_topic_as_its_own_principal(live: LiveKpi) -> None:
    other = TicketStory(f"t-other-{live.run}")
    other.created(0)

    live.write(other.events)

    eventually(lambda: live.ticket_version(other.ticket_id), lambda v: v == 3, "the created ticket folded")
    [row] = live.facts("ticket_facts", other.ticket_id, "ticket_id")
    assert (row["status"], row["department"], row["first_response_due_at"]) == (
        "new",
        "",
        T0 + timedelta(hours=4),
    )
