"""What the back-office e2e tests share: one seeded day played through the real services, broker and
KPI projection (``played_day``), and the helpers they compare the KPI views with the truth by.

The simulator stamps a step when it hears the service made it, the service when it decides: up to
``HOP_S`` apart, so times are compared within a tolerance and counts exactly.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from simulator.driver import Endpoints, Simulation
from simulator.scenario import Scenario

from services.agents import main as agents_main
from services.approvals import main as approvals_main
from services.intake import main as intake_main
from services.kpi import main as kpi_main
from services.kpi.store import KpiStore, open_kpi_store
from services.platform.settings import ClickHouseSettings, GrpcSettings, HttpSettings, Settings
from services.routing import main as routing_main
from services.tickets import main as tickets_main
from tests.support import polling

HOP_S = 0.35

# The run's tickets: those opened from its contacts' wrap-ups.
RUNS_TICKETS = (
    "ticket_id IN (SELECT ticket_id FROM ticket_facts FINAL"
    " WHERE startsWith(origin_contact_id, {run:String}))"
)
eventually = partial(polling.eventually, tries=1200, interval=0.1)


@dataclass(frozen=True)
class PlayedDay:
    """A day the simulator played: its back office's truth, the KPI store, the window the run covers,
    and what the wallboard's back-office panel read from the tickets service at the end."""

    sim: Simulation
    store: KpiStore
    window: dict[str, Any]
    board: tuple[Counter[str], dict[str, Counter[str]]]

    def view(self, name: str) -> list[dict[str, Any]]:
        """A KPI view's rows over the run's window."""
        return self.store.query(
            f"SELECT * FROM {name}(from={{f:DateTime64(3)}}, to={{t:DateTime64(3)}})", self.window
        )

    def query(self, sql: str) -> list[dict[str, Any]]:
        return self.store.query(sql, self.window)


@contextlib.contextmanager
def played_day(
    kafka_broker: Any,
    clickhouse_dir: Any,
    scenario: Scenario,
    settled: Callable[[Simulation, KpiStore], None],
    *,
    approvals: bool = False,
) -> Iterator[PlayedDay]:
    """``scenario`` played through intake, routing, agents, tickets (and approvals) with the KPI
    projection, each service as its own Kafka principal; ``settled`` waits until the KPIs show what
    the back office left, before the services stop. The store stays open while the day is used."""
    clickhouse = ClickHouseSettings(data_dir=clickhouse_dir, database=f"e2e_{uuid.uuid4().hex[:8]}")
    settings = Settings(
        kafka=kafka_broker.kafka,
        grpc=GrpcSettings(address="127.0.0.1:0"),
        http=HttpSettings(address="127.0.0.1:0"),
        clickhouse=clickhouse,
        instance_id=f"e2e-{uuid.uuid4().hex[:6]}",
    )
    services = [
        ("kpi", kpi_main.start),
        ("intake", intake_main.start),
        ("routing", routing_main.start),
        ("agents", agents_main.start),
        ("tickets", tickets_main.start),
    ]
    if approvals:
        services.append(("approvals", approvals_main.start))
    with contextlib.ExitStack() as kept:
        with contextlib.ExitStack() as run:
            processes: dict[str, Any] = {}
            run.callback(lambda: [process.close(5) for process in processes.values()])
            for name, start in services:
                # Each service as its own Kafka principal, fenced by its ACLs as in production.
                processes[name] = start(settings.model_copy(update={"kafka": kafka_broker.kafka_as(name)}))
            store = kept.enter_context(open_kpi_store(clickhouse))
            address = {name: f"127.0.0.1:{process.server.port}" for name, process in processes.items()}
            endpoints = Endpoints(
                address["intake"],
                address["routing"],
                address["agents"],
                settings.kafka,
                tickets=address["tickets"],
                approvals=address.get("approvals", ""),
            )
            sim = Simulation(scenario, endpoints)
            assert sim.backoffice is not None
            began = datetime.now(UTC)
            sim.setup()
            sim.run(drain_s=120.0)
            board = sim.backoffice.board()
            sim.teardown()
            assert not sim.tally.errors, sim.tally.error_details
            settled(sim, store)
            window = {"f": began, "t": datetime.now(UTC), "run": sim.run_id}
        yield PlayedDay(sim, store, window, board)


def keyed_by(rows: list[dict[str, Any]], *columns: str) -> dict[Any, dict[str, Any]]:
    keyed = {tuple(row[c] for c in columns) if len(columns) > 1 else row[columns[0]]: row for row in rows}
    assert len(keyed) == len(rows), f"several rows per {columns}"
    return keyed


def ratio(part: int, whole: int) -> Any:
    return pytest.approx(part / whole) if whole else None


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)
