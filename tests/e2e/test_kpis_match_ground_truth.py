"""The KPIs in ClickHouse against the simulator's ground truth, through the real services and broker.

A seeded scenario (Poisson callers on a day profile, patience, callbacks, self-service, holds, missed
and rejected offers, breaks) drives intake, routing and agents over gRPC; the KPI service projects
their events into the embedded ClickHouse engine. Then every contact KPI is computed twice: by the
views in ``deploy/clickhouse`` and directly from the simulator's record of each contact.

Counts must match exactly. Times cannot: the simulator stamps a moment when it makes or hears back
from a call, the services when they handle it, a few milliseconds to one Kafka hop (~0.1 s) apart.
So averages must agree within ``HOP_S``, and a contact whose true wait lies within ``HOP_S`` of a
threshold (service-level T, short-abandon) may count on either side of it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from statistics import mean
from typing import Any

import pytest
from simulator.driver import Endpoints, Simulation
from simulator.scenario import QueuePlan, Scenario

from services.agents import main as agents_main
from services.intake import main as intake_main
from services.kpi import main as kpi_main
from services.kpi.store import KpiStore, open_kpi_store
from services.platform.settings import ClickHouseSettings, GrpcSettings, HttpSettings, Settings
from services.routing import main as routing_main

HOP_S = 0.35
T_S = 20.0  # the simulator's queues keep the default service-level threshold
SHORT_S = 3.0

SCENARIO = replace(
    Scenario(),
    seed=11,
    duration_s=50.0,
    day_s=60.0,
    peak_arrivals_per_s=2.0,
    agents=14,
    queues=(
        QueuePlan("billing", "billing", 0.5, priority=10),
        QueuePlan("sales", "sales", 0.3, priority=20),
        QueuePlan("general", "general", 0.2, priority=5),
    ),
    patience_mean_s=25.0,
    transfer_share=0.0,  # the simulator's record has one queue per contact
    wrap_up_timeout_share=0.0,  # and knows when each wrap-up ended
)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _seconds(start: str | None, end: str | None) -> float:
    return (_time(end) - _time(start)).total_seconds()  # type: ignore[operator]


def eventually(read: Callable[[], Any], holds: Callable[[Any], bool], what: str, tries: int = 1200) -> Any:
    pause, value = threading.Event(), None
    for _ in range(tries):
        value = read()
        if holds(value):
            return value
        pause.wait(0.1)
    raise AssertionError(f"never reached: {what}; last seen {value}")


@pytest.fixture(scope="module")
def day(
    kafka_broker: Any, embedded_clickhouse_dir: Any
) -> Iterator[tuple[list[dict[str, Any]], KpiStore, Any]]:
    """One simulated day through the four services; its truth, the KPI store and the window it covers."""
    clickhouse = ClickHouseSettings(data_dir=embedded_clickhouse_dir, database=f"e2e_{uuid.uuid4().hex[:8]}")
    settings = Settings(
        kafka=kafka_broker.kafka,
        grpc=GrpcSettings(address="127.0.0.1:0"),
        http=HttpSettings(address="127.0.0.1:0"),
        clickhouse=clickhouse,
        instance_id=f"e2e-{uuid.uuid4().hex[:6]}",
    )
    processes = {
        name: start(settings)
        for name, start in (
            ("kpi", kpi_main.start),
            ("intake", intake_main.start),
            ("routing", routing_main.start),
            ("agents", agents_main.start),
        )
    }
    store = open_kpi_store(clickhouse)
    try:
        address = {name: f"127.0.0.1:{process.server.port}" for name, process in processes.items()}
        sim = Simulation(
            SCENARIO, Endpoints(address["intake"], address["routing"], address["agents"], settings.kafka)
        )
        began = datetime.now(UTC)
        sim.setup()
        sim.run(drain_s=60.0)
        sim.teardown()
        truth = [contact.truth() for contact in sim.contacts.values()]
        wrapped = sum(1 for contact in truth if contact["wrapped_at"])
        eventually(
            lambda: _settled(store, sim.run_id),
            lambda counts: counts[:2] == (len(truth), 0) and counts[2] >= wrapped,
            "every contact of the run ended in the KPIs, every visit closed and every wrap-up done",
        )
        yield truth, store, {"f": began, "t": datetime.now(UTC), "run": sim.run_id}
    finally:
        store.close()
        for process in processes.values():
            process.close(5)


def _settled(store: KpiStore, run_id: str) -> tuple[int, int, int]:
    [row] = store.query(
        """
        SELECT countIf(visit = 0 AND outcome != '') AS ended,
               countIf(visit > 0 AND (outcome = '' OR outcome = 'callback' OR ended_at IS NULL)) AS open,
               countIf(visit > 0 AND disposition != '') AS wrapped
        FROM contact_facts FINAL WHERE startsWith(contact_id, {run:String})
        """,
        {"run": run_id},
    )
    return row["ended"], row["open"], row["wrapped"]


def _sum_by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    for row in rows:
        slot = totals.setdefault(row["key"], {})
        for name, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                slot[name] = slot.get(name, 0) + value
    return totals


def _queue_kpis(store: KpiStore, window: dict[str, Any]) -> dict[str, dict[str, float]]:
    rows = store.query(
        "SELECT * FROM kpi_contacts(by='queue', grain_s=86400, from={f:DateTime64(3)}, to={t:DateTime64(3)})",
        window,
    )
    return _sum_by_key(rows)


def _queued(truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in truth if c["outcome"] != "self_service"]


def test_every_contact_and_how_it_ended_is_counted_once(day: Any) -> None:
    truth, store, window = day
    outcomes = {c["outcome"] for c in truth} | {"callback" for c in truth if c["callback"]}
    assert outcomes >= {"answered", "abandoned", "self_service", "callback"}, "the day must show each ending"
    [ivr] = store.query(
        """SELECT sum(contacts) AS contacts, sum(self_service) AS self_service, sum(routed) AS routed
           FROM kpi_ivr(grain_s=86400, from={f:DateTime64(3)}, to={t:DateTime64(3)})""",
        window,
    )
    assert ivr["contacts"] == len(truth)
    assert ivr["self_service"] == sum(c["outcome"] == "self_service" for c in truth)
    assert ivr["routed"] == len(_queued(truth))

    kpis = _queue_kpis(store, window)
    for plan in SCENARIO.queues:
        mine = [c for c in _queued(truth) if c["queue_id"] == plan.queue_id]
        got = kpis.get(plan.queue_id, {})
        answered = [c for c in mine if c["outcome"] == "answered"]
        abandoned = [c for c in mine if c["outcome"] == "abandoned"]
        assert got.get("offered", 0) == len(mine), plan.queue_id
        assert got.get("handled", 0) == len(answered), plan.queue_id
        assert got.get("abandoned", 0) + got.get("short_abandoned", 0) == len(abandoned), plan.queue_id
        assert got.get("callbacks_requested", 0) == sum(c["callback"] for c in mine), plan.queue_id
        assert got.get("callbacks_completed", 0) == sum(c["callback"] for c in answered), plan.queue_id
        short = [_seconds(c["queued_at"], c["ended_at"]) for c in abandoned if not c["callback"]]
        assert (
            sum(w < SHORT_S - HOP_S for w in short)
            <= got.get("short_abandoned", 0)
            <= sum(w < SHORT_S + HOP_S for w in short)
        ), plan.queue_id


def test_service_level_asa_and_abandon_times_follow_the_callers_waits(day: Any) -> None:
    truth, store, window = day
    kpis = _queue_kpis(store, window)
    checked = 0
    for plan in SCENARIO.queues:
        mine = [c for c in _queued(truth) if c["queue_id"] == plan.queue_id and not c["callback"]]
        waits = [_seconds(c["queued_at"], c["answered_at"]) for c in mine if c["outcome"] == "answered"]
        gone = [_seconds(c["queued_at"], c["ended_at"]) for c in mine if c["outcome"] == "abandoned"]
        got = kpis.get(plan.queue_id)
        if not waits or got is None:
            continue
        checked += 1
        within = got["answered_within_t"]
        assert sum(w <= T_S - HOP_S for w in waits) <= within <= sum(w <= T_S + HOP_S for w in waits)
        assert got["asa_s"] == pytest.approx(mean(waits), abs=HOP_S)
        long_gone = [w for w in gone if w >= SHORT_S]
        if long_gone and not any(abs(w - SHORT_S) < HOP_S for w in gone):  # none can fall either side
            assert got["abandoned"] == len(long_gone)
            assert got["avg_time_to_abandon_s"] == pytest.approx(mean(long_gone), abs=HOP_S)
    assert checked, "no queue answered a live contact: the scenario proves nothing"


def test_handle_time_and_answering_agents_match(day: Any) -> None:
    truth, store, window = day
    answered = [c for c in _queued(truth) if c["outcome"] == "answered" and c["wrapped_at"]]
    facts = {
        row["contact_id"]: row
        for row in store.query(
            "SELECT * FROM contact_facts FINAL WHERE startsWith(contact_id, {run:String}) AND visit = 1",
            window,
        )
    }
    assert answered
    for contact in answered:
        fact = facts[contact["contact_id"]]
        assert fact["agent_id"] == contact["agent_id"]
        assert fact["talk_s"] + fact["hold_s"] == pytest.approx(
            _seconds(contact["answered_at"], contact["ended_at"]), abs=HOP_S
        )
        assert fact["wrap_s"] == pytest.approx(
            _seconds(contact["ended_at"], contact["wrapped_at"]), abs=HOP_S
        )
    handled_by = store.query(
        """SELECT key, sum(handled) AS handled
           FROM kpi_contacts(by='agent', grain_s=86400, from={f:DateTime64(3)}, to={t:DateTime64(3)})
           GROUP BY key""",
        window,
    )
    truth_by: dict[str, int] = {}
    for contact in _queued(truth):
        if contact["outcome"] == "answered":
            truth_by[contact["agent_id"]] = truth_by.get(contact["agent_id"], 0) + 1
    assert {row["key"]: row["handled"] for row in handled_by if row["handled"]} == truth_by
