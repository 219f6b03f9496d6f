"""The KPIs in ClickHouse against the simulator's ground truth, through the real services and broker.

A seeded scenario (Poisson callers from a customer base on a day profile, patience, callbacks,
self-service, holds, transfers, overflow, missed and rejected offers, breaks, wrap-ups that time
out) drives intake, routing and agents over gRPC; the KPI service projects their events into the
embedded ClickHouse engine. Then every KPI is computed twice: by the views in ``deploy/clickhouse``
and directly from the simulator's record of each contact's queue visits and each agent's desk.

The callers' numbers reach intake as a Chinese trunk writes them (``clear_numbers.Telephony``):
E.164 with and without spaces or dashes, after the 00 prefix, with 86 and no '+', national, as tel: and
sip: URIs, and withheld in the forms telephony sends for that. One caller in several forms must be
one pseudonym in the KPIs, the withheld ones none, and after the run no topic, service log line or
KPI table may hold any of the numbers in clear, nor their last 8 digits.

Counts must match exactly. Times cannot: the simulator stamps a moment when it makes or hears back
from a call, the services when they handle it, a few milliseconds to one Kafka hop (~0.1 s) apart.
So every moment may differ by ``HOP_S``: an average by as much, a sum of n intervals by 2n times
as much, and a contact whose true wait lies within ``HOP_S`` of a threshold (service-level T,
short-abandon) may count on either side of it. A desk hears that it rings two hops after routing
chose it (routing, then the agents service), so a ring's start, and its end when it rings out, may
differ by ``PUSH_S``; and wrap-up begins two hops after the desk hung up (intake records the end,
then the agents service reacts to it), so its start may too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from statistics import mean
from typing import Any

import grpc
import pytest
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import service_pb2 as intake_pb
from simulator.driver import Endpoints, Simulation
from simulator.scenario import QueuePlan, Scenario

from services.agents import main as agents_main
from services.intake import main as intake_main
from services.kpi import main as kpi_main
from services.kpi.store import KpiStore, open_kpi_store
from services.platform.privacy import pseudonymise
from services.platform.settings import (
    ClickHouseSettings,
    GrpcSettings,
    HttpSettings,
    PrivacySettings,
    Settings,
)
from services.routing import main as routing_main
from tests.e2e.clear_numbers import (
    Finder,
    LogCapture,
    Telephony,
    scan_lines,
    scan_tables,
    scan_topics,
)
from tests.support import polling

HOP_S = 0.35
PUSH_S = 2 * HOP_S
T_S = 20.0  # the simulator's queues keep the default service-level threshold
SHORT_S = 3.0
FCR_DAYS = 1
WHOLE_RUN_S = 2**32 - 1  # the longest grain: one bucket, from 1970 to 2106, holds the whole run

SCENARIO = replace(
    Scenario(),
    seed=11,
    duration_s=50.0,
    day_s=60.0,
    peak_arrivals_per_s=2.0,
    agents=14,
    customers=60,
    queues=(
        QueuePlan("billing", "billing", 0.5, priority=10, overflow_to="general"),
        QueuePlan("sales", "sales", 0.3, priority=20),
        QueuePlan("general", "general", 0.2, priority=5),
    ),
    max_wait_s=15.0,
    patience_mean_s=25.0,
    transfer_share=0.1,
    miss_share=0.04,
    reject_share=0.04,
)


@dataclass(frozen=True)
class Day:
    """The run's truth (each contact's ``caller`` is its mobile, None when withheld; ``sent`` what
    telephony sent), the KPI store, the window the run covers, and what the services logged."""

    contacts: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    store: KpiStore
    window: dict[str, Any]
    privacy: PrivacySettings
    mobiles: set[str]
    logs: list[str]
    refusals: list[str]

    def visits(self) -> list[dict[str, Any]]:
        """Every queue visit, with its contact's caller and arrival."""
        return [
            {**visit, "contact_id": c["contact_id"], "caller": c["caller"], "arrived_at": c["arrived_at"]}
            for c in self.contacts
            for visit in c["visits"]
        ]

    def query(self, sql: str) -> list[dict[str, Any]]:
        return self.store.query(sql, self.window)

    def view(self, name: str, **arguments: Any) -> list[dict[str, Any]]:
        """A KPI view's rows over the whole run, in one bucket."""
        given = "".join(f"{key}={value!r}, " for key, value in arguments.items())
        window = "from={f:DateTime64(3)}, to={t:DateTime64(3)}"
        return self.query(f"SELECT * FROM {name}({given}grain_s={WHOLE_RUN_S}, {window})")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _seconds(start: str | None, end: str | None) -> float:
    return (_time(end) - _time(start)).total_seconds()  # type: ignore[operator]


eventually = partial(polling.eventually, tries=1200, interval=0.1)


@pytest.fixture(scope="module")
def day(kafka_broker: Any, embedded_clickhouse_dir: Any) -> Iterator[Day]:
    """One simulated day through the four services: its truth, the KPI store and the window it covers.
    The services are stopped before the tests read it, so their logs are complete."""
    clickhouse = ClickHouseSettings(data_dir=embedded_clickhouse_dir, database=f"e2e_{uuid.uuid4().hex[:8]}")
    settings = Settings(
        kafka=kafka_broker.kafka,
        grpc=GrpcSettings(address="127.0.0.1:0"),
        http=HttpSettings(address="127.0.0.1:0"),
        clickhouse=clickhouse,
        instance_id=f"e2e-{uuid.uuid4().hex[:6]}",
    )
    telephony = Telephony(SCENARIO)
    with contextlib.ExitStack() as kept:
        with contextlib.ExitStack() as run:
            logs = run.enter_context(LogCapture())
            processes: dict[str, Any] = {}
            run.callback(lambda: [process.close(5) for process in processes.values()])
            for name, start in (
                ("kpi", kpi_main.start),
                ("intake", intake_main.start),
                ("routing", routing_main.start),
                ("agents", agents_main.start),
            ):
                # Each service as its own Kafka principal, fenced by its ACLs as in production.
                processes[name] = start(settings.model_copy(update={"kafka": kafka_broker.kafka_as(name)}))
            store = kept.enter_context(open_kpi_store(clickhouse))
            address = {name: f"127.0.0.1:{process.server.port}" for name, process in processes.items()}
            sim = Simulation(
                SCENARIO, Endpoints(address["intake"], address["routing"], address["agents"], settings.kafka)
            )
            sim.intake = telephony.adapter(sim.intake)
            began = datetime.now(UTC)
            sim.setup()
            sim.run(drain_s=60.0)
            refusals = _unreadable_reports(sim.intake, sim.run_id, sorted(telephony.mobiles())[0])
            sim.teardown()
            contacts = [
                _as_telephony_sent_it(contact.truth(), telephony) for contact in sim.contacts.values()
            ]
            agents = [agent.truth() for agent in sim.agents.values()]
            visits = sum(len(c["visits"]) for c in contacts)
            wrapped = sum(1 for c in contacts for v in c["visits"] if v["wrapped_at"])
            assert not sim.tally.errors, sim.tally.error_details
            expected = (len(contacts), visits, 0, wrapped, 0)
            eventually(
                lambda: _settled(store, sim.run_id),
                lambda counts: counts == expected,
                f"every contact and visit of the run closed in the KPIs, every wrap-up done, every agent out "
                f"(contacts, visits, open visits, wrapped, agents in: {expected})",
            )
            window = {"f": began, "t": datetime.now(UTC), "run": sim.run_id}
        # The services stopped: their logs are complete.
        yield Day(
            contacts, agents, store, window, settings.privacy, telephony.mobiles(), logs.lines, refusals
        )


def _unreadable_reports(intake: Any, run_id: str, mobile: str) -> list[str]:
    """Starts a trunk gets wrong, each holding a caller number of the run: each is refused, recording
    nothing; their details (which an adapter logs) are kept for the scan."""
    national = mobile.removeprefix("+86")
    details = []
    for n, written in enumerate((f"{mobile} ext 12", f"{national}#", f"CLI:{national}")):
        request = intake_pb.StartContactRequest(
            request_id=f"{run_id}/unreadable/{n}",
            contact_id=f"{run_id}-unreadable-{n}",
            channel=types_pb2.Channel.CHANNEL_VOICE,
            caller_number=written,
        )
        with pytest.raises(grpc.RpcError) as refused:
            intake.StartContact(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        details.append(refused.value.details())
    return details


def _as_telephony_sent_it(truth: dict[str, Any], telephony: Telephony) -> dict[str, Any]:
    """The simulator's truth of a contact, its caller known by the mobile telephony sent (None when
    withheld: an anonymous caller is nobody's repeat)."""
    line = telephony.sent[truth["contact_id"]]
    return {**truth, "caller": line.mobile, "sent": line.sent}


def _settled(store: KpiStore, run_id: str) -> tuple[int, int, int, int, int]:
    [row] = store.query(
        """
        SELECT countIf(visit = 0 AND outcome != '') AS ended,
               countIf(visit > 0) AS visits,
               countIf(visit > 0 AND (outcome = '' OR outcome = 'callback' OR ended_at IS NULL)) AS open,
               countIf(visit > 0 AND wrap_s > 0) AS wrapped,
               (SELECT count() FROM agent_state_intervals FINAL
                WHERE startsWith(agent_id, {run:String}) AND ended_at IS NULL) AS agents_in
        FROM contact_facts FINAL WHERE startsWith(contact_id, {run:String})
        """,
        {"run": run_id},
    )
    return row["ended"], row["visits"], row["open"], row["wrapped"], row["agents_in"]


def _by(rows: list[dict[str, Any]], *columns: str) -> dict[Any, dict[str, Any]]:
    """The rows by their key columns, which name one row each (one bucket for the whole run)."""
    keyed = {tuple(row[c] for c in columns) if len(columns) > 1 else row[columns[0]]: row for row in rows}
    assert len(keyed) == len(rows), f"several rows per {columns}"
    return keyed


def _queue_kpis(day: Day) -> dict[str, dict[str, Any]]:
    return _by(day.view("kpi_contacts", by="queue"), "key")


def test_the_day_shows_every_kind_of_contact_and_desk_event(day: Day) -> None:
    visits = day.visits()
    endings = Counter(v["outcome"] for v in visits) + Counter(c["outcome"] for c in day.contacts)
    assert {"answered", "abandoned", "overflowed", "self_service"} <= set(endings), endings
    assert any(v["callback"] for v in visits) and any(v["transferred"] for v in visits)
    offers = sum((Counter(a["offers"]) for a in day.agents), Counter())
    assert {"accepted", "rejected", "timed_out"} <= set(offers), offers
    reasons = {reason for a in day.agents for _, state, reason in a["timeline"] if state == "not_ready"}
    assert "missed_offer" in reasons and len(reasons) > 1, reasons
    callers = Counter(c["caller"] for c in day.contacts if c["caller"])
    assert max(callers.values()) > 1, "no caller called twice: first-contact resolution proves nothing"
    assert any(c["caller"] is None for c in day.contacts), "no withheld caller: anonymity proves nothing"


def test_every_contact_and_visit_and_how_it_ended_is_counted_once(day: Day) -> None:
    [ivr] = day.view("kpi_ivr")
    assert ivr["contacts"] == len(day.contacts)
    assert ivr["self_service"] == sum(c["outcome"] == "self_service" for c in day.contacts)
    assert ivr["routed"] == sum(bool(c["visits"]) for c in day.contacts)

    kpis = _queue_kpis(day)
    for plan in SCENARIO.queues:
        mine = [v for v in day.visits() if v["queue_id"] == plan.queue_id]
        got = kpis.get(plan.queue_id, {})
        answered = [v for v in mine if v["answered_at"]]
        abandoned = [v for v in mine if v["outcome"] == "abandoned"]
        assert got.get("offered", 0) == len(mine), plan.queue_id
        assert got.get("handled", 0) == len(answered), plan.queue_id
        assert got.get("abandoned", 0) + got.get("short_abandoned", 0) == len(abandoned), plan.queue_id
        assert got.get("overflowed", 0) == sum(v["outcome"] == "overflowed" for v in mine), plan.queue_id
        assert got.get("callbacks_requested", 0) == sum(v["callback"] for v in mine), plan.queue_id
        assert got.get("callbacks_completed", 0) == sum(v["callback"] for v in answered), plan.queue_id
        transferred = sum(v["transferred"] for v in answered)
        assert got.get("transfer_rate") == (pytest.approx(transferred / len(answered)) if answered else None)
        assert got.get("answer_rate") == (pytest.approx(len(answered) / len(mine)) if mine else None)
        callbacks = [v for v in mine if v["callback"]]
        assert got.get("callback_completion_rate") == (
            pytest.approx(sum(bool(v["answered_at"]) for v in callbacks) / len(callbacks))
            if callbacks
            else None
        )
        short = [_seconds(v["queued_at"], v["ended_at"]) for v in abandoned if not v["callback"]]
        assert (
            sum(w < SHORT_S - HOP_S for w in short)
            <= got.get("short_abandoned", 0)
            <= sum(w < SHORT_S + HOP_S for w in short)
        ), plan.queue_id


def test_service_level_asa_and_abandon_times_follow_the_callers_waits(day: Day) -> None:
    kpis = _queue_kpis(day)
    checked = 0
    for plan in SCENARIO.queues:
        mine = [v for v in day.visits() if v["queue_id"] == plan.queue_id and not v["callback"]]
        waits = [_seconds(v["queued_at"], v["answered_at"]) for v in mine if v["answered_at"]]
        gone = [_seconds(v["queued_at"], v["ended_at"]) for v in mine if v["outcome"] == "abandoned"]
        got = kpis.get(plan.queue_id)
        if not waits or got is None:
            continue
        checked += 1
        within, low, high = (
            got["answered_within_t"],
            sum(w <= T_S - HOP_S for w in waits),
            sum(w <= T_S + HOP_S for w in waits),
        )
        assert low <= within <= high
        assert low / len(waits) <= got["service_level_answered"] <= high / len(waits)
        assert got["asa_s"] == pytest.approx(mean(waits), abs=HOP_S)
        long_gone = [w for w in gone if w >= SHORT_S]
        if long_gone and not any(abs(w - SHORT_S) < HOP_S for w in gone):  # none can fall either side
            assert got["abandoned"] == len(long_gone)
            assert got["avg_time_to_abandon_s"] == pytest.approx(mean(long_gone), abs=HOP_S)
    assert checked, "no queue answered a live contact: the scenario proves nothing"


def test_handle_time_and_answering_agents_match(day: Day) -> None:
    facts = {
        (row["contact_id"], row["visit"]): row
        for row in day.query(
            "SELECT * FROM contact_facts FINAL WHERE startsWith(contact_id, {run:String}) AND visit > 0"
        )
    }
    handled_by: Counter[str] = Counter()
    for contact in day.contacts:
        for number, visit in enumerate(contact["visits"], start=1):
            fact = facts[(contact["contact_id"], number)]
            assert fact["queue_id"] == visit["queue_id"]
            if not visit["answered_at"]:
                continue
            handled_by[visit["agent_id"]] += 1
            assert fact["agent_id"] == visit["agent_id"]
            assert fact["talk_s"] + fact["hold_s"] == pytest.approx(
                _seconds(visit["answered_at"], visit["ended_at"]), abs=2 * HOP_S
            )
            if visit["wrapped_at"]:
                assert fact["wrap_s"] == pytest.approx(
                    _seconds(visit["ended_at"], visit["wrapped_at"]), abs=2 * HOP_S
                )
    assert handled_by
    by_agent = _by(day.view("kpi_contacts", by="agent"), "key")
    assert {key: row["handled"] for key, row in by_agent.items() if row["handled"]} == dict(handled_by)


def _tolerance(state: str, reason: str) -> float:
    """How far the KPIs may place the start of this state from the moment the desk saw it."""
    return PUSH_S if state in ("reserved", "wrap_up") or reason == "missed_offer" else HOP_S


def _intervals(agent: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """The desk's timeline as (state, reason, seconds, slack) intervals, up to logging out; slack
    is how far the KPIs may be off the interval's length (the tolerance at either end)."""
    timeline = agent["timeline"]
    return [
        (
            state,
            reason,
            _seconds(at, timeline[n + 1][0]),
            _tolerance(state, reason) + _tolerance(*timeline[n + 1][1:]),
        )
        for n, (at, state, reason) in enumerate(timeline[:-1])
        if state != "logged_out"
    ]


def test_each_agents_states_follow_the_desk(day: Day) -> None:
    facts: dict[str, list[dict[str, Any]]] = {}
    for row in day.query(
        """SELECT agent_id, state, reason, started_at, ended_at FROM agent_state_intervals FINAL
           WHERE startsWith(agent_id, {run:String}) ORDER BY agent_id, started_at"""
    ):
        facts.setdefault(row["agent_id"], []).append(row)
    for agent in day.agents:
        timeline = [(state, reason) for _, state, reason in agent["timeline"] if state != "logged_out"]
        mine = facts[agent["agent_id"]]
        assert [(row["state"], row["reason"]) for row in mine] == timeline, agent["agent_id"]
        for row, (at, state, reason) in zip(mine, agent["timeline"], strict=False):
            off = (row["started_at"].replace(tzinfo=UTC) - _time(at)).total_seconds()  # type: ignore[operator]
            assert abs(off) <= _tolerance(state, reason), (agent["agent_id"], state, off)


def test_agent_time_occupancy_and_not_ready_reasons_match_the_desks(day: Day) -> None:
    kpis = _by(day.view("kpi_agents"), "agent_id")
    not_ready = _by(day.view("kpi_not_ready"), "agent_id", "reason")
    for agent in day.agents:
        got, intervals = kpis[agent["agent_id"]], _intervals(agent)

        def truth(
            *states: str, intervals: list[tuple[str, str, float, float]] = intervals
        ) -> tuple[float, float]:
            """Seconds in these states, and how far the KPIs may be off."""
            mine = [(seconds, slack) for state, _, seconds, slack in intervals if state in states]
            return sum(seconds for seconds, _ in mine), sum(slack for _, slack in mine)

        for column, states in (
            ("ready_s", ("ready",)),
            ("reserved_s", ("reserved",)),
            ("on_contact_s", ("on_contact",)),
            ("wrap_up_s", ("wrap_up",)),
            ("not_ready_s", ("not_ready",)),
        ):
            seconds, slack = truth(*states)
            assert got[column] == pytest.approx(seconds, abs=slack + 1e-3), (agent["agent_id"], column)
        logged_in = sum(seconds for _, _, seconds, _ in intervals)
        assert got["logged_in_s"] == pytest.approx(logged_in, abs=2 * HOP_S)
        handling, h_slack = truth("on_contact", "wrap_up")
        ready, r_slack = truth("ready")
        low, high = max(handling - h_slack, 0.0), handling + h_slack
        assert got["utilisation"] == pytest.approx(
            handling / logged_in, abs=(h_slack + 2 * HOP_S) / logged_in
        )
        if handling + ready:
            assert (
                low / (low + ready + r_slack) <= got["occupancy"] <= high / (high + max(ready - r_slack, 0))
            )

        reasons = {reason for state, reason, _, _ in intervals if state == "not_ready"}
        for reason in reasons:
            spells = [
                (s, slack) for state, why, s, slack in intervals if state == "not_ready" and why == reason
            ]
            row = not_ready[(agent["agent_id"], reason)]
            assert row["occurrences"] == len(spells), (agent["agent_id"], reason)
            assert row["not_ready_s"] == pytest.approx(
                sum(s for s, _ in spells), abs=sum(slack for _, slack in spells) + 1e-3
            )
        assert {why for (who, why) in not_ready if who == agent["agent_id"]} == reasons


def test_offers_missed_offers_and_answer_rate_per_agent_match_the_desks(day: Day) -> None:
    kpis = _by(day.view("kpi_agents"), "agent_id")
    for agent in day.agents:
        offers, got = Counter(agent["offers"]), kpis[agent["agent_id"]]
        for column, outcome in (
            ("accepted", "accepted"),
            ("rejected", "rejected"),
            ("missed", "timed_out"),
            ("contact_ended", "contact_ended"),
        ):
            assert got[column] == offers[outcome], (agent["agent_id"], column)
        answerable = offers["accepted"] + offers["rejected"] + offers["timed_out"]
        expected = pytest.approx(offers["accepted"] / answerable) if answerable else None
        assert got["agent_answer_rate"] == expected, agent["agent_id"]


def test_first_contact_resolution_counts_callers_who_called_the_same_queue_again(day: Day) -> None:
    visits = day.visits()
    arrivals: dict[tuple[str, str], list[datetime]] = {}
    for visit in visits:
        if visit["caller"] is not None:  # a withheld caller is nobody's repeat
            arrivals.setdefault((visit["caller"], visit["queue_id"]), []).append(_time(visit["arrived_at"]))  # type: ignore[arg-type]
    got = {row["queue_id"]: row for row in day.query(_FCR)}
    for plan in SCENARIO.queues:
        handled = [v for v in visits if v["queue_id"] == plan.queue_id and v["answered_at"]]
        repeats = sum(
            any(
                answered < later <= answered + timedelta(days=FCR_DAYS)
                for later in arrivals.get((v["caller"], plan.queue_id), [])
            )
            for v in handled
            for answered in [_time(v["answered_at"])]
        )
        close_calls = sum(
            abs((later - _time(v["answered_at"])).total_seconds()) <= HOP_S  # type: ignore[operator]
            for v in handled
            for later in arrivals.get((v["caller"], plan.queue_id), [])
        )
        row = got.get(plan.queue_id, {"handled": 0, "repeats": 0})
        assert row["handled"] == len(handled), plan.queue_id
        assert abs(row["repeats"] - repeats) <= close_calls, plan.queue_id


_FCR = f"SELECT * FROM kpi_fcr(days={FCR_DAYS}, from={{f:DateTime64(3)}}, to={{t:DateTime64(3)}})"


def test_one_caller_in_several_forms_is_one_pseudonym_in_the_kpis_and_a_withheld_one_none(day: Day) -> None:
    rows = day.query(
        """SELECT contact_id, any(caller_hash) AS pseudonym, uniqExact(caller_hash) AS hashes
           FROM contact_facts WHERE startsWith(contact_id, {run:String}) GROUP BY contact_id"""
    )
    facts = {row["contact_id"]: row for row in rows}
    forms: dict[str, set[str]] = {}
    hashes: dict[str, set[str]] = {}
    for contact in day.contacts:
        fact = facts[contact["contact_id"]]
        assert fact["hashes"] == 1, contact["contact_id"]
        if contact["caller"] is None:
            assert fact["pseudonym"] == "", f"withheld as {contact['sent']!r}, yet a caller"
            continue
        forms.setdefault(contact["caller"], set()).add(contact["sent"])
        hashes.setdefault(contact["caller"], set()).add(fact["pseudonym"])
    assert sum(len(sent) > 1 for sent in forms.values()) >= 3, "too few callers seen in several forms"
    for mobile, seen in hashes.items():
        assert seen == {pseudonymise(mobile, day.privacy).hash}, (mobile, sorted(forms[mobile]))
    assert len({next(iter(seen)) for seen in hashes.values()}) == len(hashes), "two callers, one pseudonym"


def test_no_caller_number_is_in_clear_in_any_topic_log_line_or_kpi_table(day: Day, kafka_broker: Any) -> None:
    finder = Finder(day.mobiles)
    topics = scan_topics(kafka_broker.client_config(), finder)
    logs = scan_lines(day.logs, finder)
    tables = scan_tables(day.store, finder)
    for scan in (topics, logs, tables):
        print(scan.summary())

    assert topics.found + logs.found + tables.found == []
    assert len(day.refusals) == 3 and not [detail for detail in day.refusals if finder.find(detail)]
    assert {"contacts.events.v1", "contacts.snapshots.v1", "deadletter.v1", "__consumer_offsets"} <= set(
        topics.units
    )
    assert topics.units["contacts.events.v1"] >= len(day.contacts) and tables.units["contact_facts"] > 0
    assert logs.units["lines"] > 0
    sent = [contact["sent"] for contact in day.contacts if contact["caller"]]
    assert all(finder.find(written) for written in sent), "the scan would miss a form the run sent"
