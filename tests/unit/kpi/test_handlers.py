"""The KPI projector through the consumer runner over in-memory fakes: facts per batch, folds kept in
changelog tables across restarts and retries, old contacts forgotten, and the live board."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from callcenter.routing.v1 import events_pb2 as routing_ev
from callcenter.tickets.v1 import events_pb2 as ticket_ev

from services.approvals.domain import REQUEST_INFO
from services.kpi.handlers import (
    AGENTS,
    APPROVALS,
    APPROVALS_TOPIC,
    CONTACTS,
    CONTACTS_TOPIC,
    REACTS_TO,
    TICKETS,
    TICKETS_TOPIC,
    KpiProjector,
    gauge_rows,
    kinds,
    registry,
)
from services.kpi.projection import Row
from services.kpi.store import KpiStoreError
from services.platform.consumer import ConsumerRunner
from services.platform.envelope import Envelope, encode
from services.platform.eventstore import EventStore, LogWriteFailed, OutgoingRecord
from tests.support.center import T0, Clock
from tests.support.memory import InMemoryBroker, InMemoryEventLog, InMemorySource, InterleavedSource
from tests.unit.kpi.approval_events import FINANCE, LEAD, LEGAL, ApprovalStory, h
from tests.unit.kpi.events import (
    STATE,
    TOPIC_OF,
    Call,
    agent,
    answered_call,
    connected,
    contact,
    duration,
    ended,
    entry,
    logged_in,
    logged_out,
    queue,
    queue_upserted,
    queued,
    started,
    state_changed,
)
from tests.unit.kpi.ticket_events import DAY, HOUR, TicketStory, closed_loop

READY, NOT_READY = STATE.AGENT_STATE_READY, STATE.AGENT_STATE_NOT_READY
RESERVED, ON_CONTACT = STATE.AGENT_STATE_RESERVED, STATE.AGENT_STATE_ON_CONTACT
LOGGED_OUT = STATE.AGENT_STATE_LOGGED_OUT


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


KEYS = {
    "contact_facts": "fact_id",
    "offer_facts": "offer_id",
    "agent_state_intervals": "interval_id",
    "ticket_facts": "ticket_id",
    "dispatch_facts": "dispatch_fact_id",
    "ticket_state_intervals": "interval_id",
    "approval_step_facts": "step_fact_id",
}


class ListSink:
    """The KPI store as a list of inserts; it refuses a table's inserts while told to."""

    def __init__(self) -> None:
        self.inserts: list[tuple[str, list[Row]]] = []
        self.refusing: dict[str, int] = {}
        self.refused_contacts: set[str] = set()

    def refuse(self, table: str, times: int) -> None:
        self.refusing[table] = times

    def insert(self, table: str, rows: list[Row], dedup_token: str | None = None) -> int:
        if self.refusing.get(table):
            self.refusing[table] -= 1
            raise KpiStoreError("Code: 210. Connection refused", code=210)
        if any(row.get("contact_id") in self.refused_contacts for row in rows):
            raise KpiStoreError("Code: 469. DB::Exception: Constraint `outcome_is_known` is violated")
        self.inserts.append((table, [dict(row) for row in rows]))
        return len(rows)

    def tables(self) -> list[str]:
        return [table for table, _ in self.inserts]

    def final(self, table: str) -> dict[str, Row]:
        """What a FINAL read gives: per fact, its row of the highest version (the later insert on a tie)."""
        newest: dict[str, Row] = {}
        for name, rows in self.inserts:
            for row in rows if name == table else ():
                key = row[KEYS.get(table, "queue_id")]
                if key not in newest or row["version"] >= newest[key]["version"]:
                    newest[key] = row
        return newest


class Kpi:
    """The KPI consumer as main.py wires it, over an in-memory broker shared by its restarts."""

    def __init__(
        self,
        broker: InMemoryBroker | None = None,
        sink: ListSink | None = None,
        clock: Clock | None = None,
        retention: timedelta = timedelta(hours=1),
        choose: Callable[[list[tuple[str, int]]], tuple[str, int]] | None = None,
    ) -> None:
        """With ``choose``, the consumer reads one record at a time, from the partition it picks."""
        self.clock = clock or Clock(T0)
        self.broker = broker or InMemoryBroker(clock=self.clock)
        self.sink = sink or ListSink()
        self.retention = retention
        log = InMemoryEventLog(self.broker, "kpi.events.v1", "kpi.snapshots.v1", "kpi")
        self.store = EventStore(log, registry(), kinds(), clock=self.clock)
        source = (
            InMemorySource(self.broker, "kpi", REACTS_TO)
            if choose is None
            else InterleavedSource(self.broker, "kpi", REACTS_TO, choose)
        )
        self.projector = KpiProjector(self.store, self.sink, source.read_horizon, retention=retention)
        self.board = self.projector.board
        self.store.start()
        self.runner = ConsumerRunner(
            "kpi", source, self.store, registry(), self.projector.project, after_batch=self.projector.flush
        )

    def publish(self, *envelopes: Envelope) -> None:
        for envelope in envelopes:
            key, value, headers = encode(envelope)
            self.broker.write(OutgoingRecord(TOPIC_OF[envelope.aggregate_type], key, value, headers))

    def run(self, *envelopes: Envelope) -> int:
        """Publish the events, then handle everything unread (one batch, read again after a failure)."""
        self.publish(*envelopes)
        handled = self.runner.run_once()
        while self.runner.run_once():
            pass
        return handled

    def restarted(self, sink: ListSink | None = None) -> Kpi:
        return Kpi(self.broker, sink or self.sink, self.clock, self.retention)

    def knows(self, contact_id: str) -> bool:
        return self.store.load(CONTACTS, contact_id).exists

    def knows_ticket(self, ticket_id: str) -> bool:
        return self.store.load(TICKETS, ticket_id).exists

    def knows_approval(self, approval_id: str) -> bool:
        return self.store.load(APPROVALS, approval_id).exists


def agent_a1_before(call: Call) -> list[Envelope]:
    """a-1 logs in (billing, sales) and is offered and connected to the call, before its wrap-up."""
    a = agent("a-1")
    on_c1 = {"contact_id": call.contact_id, "queue_id": "billing"}
    return [
        a.at(-60, logged_in("a-1", ("billing",), ("billing", "sales"))),
        a.at(-60, state_changed("a-1", LOGGED_OUT, READY)),
        a.at(12, state_changed("a-1", READY, RESERVED, **on_c1)),
        a.at(19, state_changed("a-1", RESERVED, ON_CONTACT, **on_c1)),
    ]


def reference(*batches: Sequence[Envelope]) -> ListSink:
    """The facts of the events written once, each batch in turn, by a consumer that never failed."""
    kpi = Kpi()
    for batch in batches:
        kpi.run(*batch)
    return kpi.sink


# facts per batch ----------------------------------------------------------------------------------


def test_a_batch_writes_each_table_once_with_the_newest_row_of_each_fact() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.run(*agent_a1_before(call)[:2])
    kpi.sink.inserts.clear()

    kpi.run(*agent_a1_before(call)[2:], *call.all)

    assert kpi.sink.tables() == ["contact_facts", "offer_facts", "agent_state_intervals"]
    contact_facts, offer_facts, intervals = (rows for _, rows in kpi.sink.inserts)
    assert [(row["fact_id"], row["version"], row["outcome"]) for row in contact_facts] == [
        ("c-1:0", 13, "routed"),
        ("c-1:1", 13, "answered"),
    ]
    assert (contact_facts[1]["talk_s"], contact_facts[1]["wrap_s"], contact_facts[1]["skill_group"]) == (
        105.0,
        30.0,
        "billing",
    )
    assert [(row["offer_id"], row["outcome"], row["version"]) for row in offer_facts] == [
        ("c-1:o-1", "accepted", 2)
    ]
    assert [(row["state"], row["version"]) for row in intervals] == [
        ("ready", 2),
        ("reserved", 2),
        ("on_contact", 2),
        ("wrap_up", 1),
    ], "the interval opened and closed in the batch is written once, closed"


def test_each_batch_writes_the_facts_its_events_changed() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.run(*call.intake[:3], *call.routing[:2])
    first = len(kpi.sink.inserts)

    kpi.run(*call.routing[2:])

    assert first == 2, "contact_facts and offer_facts"
    assert kpi.sink.tables()[first:] == ["contact_facts", "offer_facts"]
    assert [row["version"] for row in kpi.sink.inserts[first][1]] == [7, 7]


def test_an_event_delivered_again_in_a_later_batch_writes_nothing() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.run(*call.all)
    written = len(kpi.sink.inserts)

    kpi.run(call.intake[-1], call.routing[1], call.agents[0])

    assert kpi.runner.stats.handled == 16, "the runner hands them on: the folds know them already"
    assert len(kpi.sink.inserts) == written
    assert kpi.store.load(CONTACTS, "c-1").state.version == 13


# restarts, redeliveries and retries ---------------------------------------------------------------


def test_the_folds_survive_a_restart_and_a_later_event_continues_the_facts() -> None:
    call = answered_call()
    first_part = [*agent_a1_before(call), *call.intake[:4], *call.routing]
    kpi = Kpi()
    kpi.run(*first_part)

    restarted = kpi.restarted(ListSink())
    restarted.run(*call.intake[4:], *call.agents)

    expected = reference(first_part, [*call.intake[4:], *call.agents])
    assert restarted.sink.final("contact_facts") == expected.final("contact_facts")
    assert restarted.sink.final("contact_facts")["c-1:1"]["talk_s"] == 105.0
    assert restarted.sink.final("contact_facts")["c-1:1"]["version"] == 13
    closed = restarted.sink.final("agent_state_intervals")
    opened = kpi.sink.final("agent_state_intervals")
    [on_contact] = [key for key, row in opened.items() if row["state"] == "on_contact"]
    assert (opened[on_contact]["version"], closed[on_contact]["version"]) == (1, 2)
    assert closed[on_contact]["duration_s"] == 121.0


def test_a_batch_whose_commit_was_aborted_is_done_again_with_the_same_rows_and_versions() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.broker.failures.append(LogWriteFailed("the broker aborted the transaction"))

    kpi.run(*call.all)

    assert kpi.runner.stats.retries == 1
    half = len(kpi.sink.inserts) // 2
    assert kpi.sink.tables() == ["contact_facts", "offer_facts", "agent_state_intervals"] * 2
    assert kpi.sink.inserts[:half] == kpi.sink.inserts[half:]
    assert kpi.sink.final("contact_facts") == reference(call.all).final("contact_facts")
    assert sum(kpi.broker.group_offsets["kpi"].values()) == len(call.all)


def test_a_batch_redelivered_after_a_crash_before_its_commit_doubles_no_fact() -> None:
    kpi, call = Kpi(), answered_call()
    events = [*agent_a1_before(call), *call.all]
    kpi.broker.failures.extend(LogWriteFailed("the broker is away") for _ in range(10_000))
    stopping = threading.Event()
    stopping.set()
    kpi.publish(*events)
    running = threading.Thread(target=kpi.runner.run_once, args=(stopping,))
    running.start()
    while kpi.store.health.serving:
        stopping.wait(0.01)
    kpi.store.close(grace_s=0.1)  # the process dies with its batch's commit never written
    running.join(10)
    crashed = list(kpi.sink.inserts)
    kpi.broker.failures.clear()

    kpi.restarted().runner.run_once()

    assert crashed, "the first delivery reached the sink before its commit failed"
    assert kpi.sink.inserts[len(crashed) :] == crashed
    expected = reference(events)
    for table in ("contact_facts", "offer_facts", "agent_state_intervals"):
        assert kpi.sink.final(table) == expected.final(table)


def test_a_refusing_kpi_store_makes_the_runner_retry_and_the_rows_written_after_are_complete() -> None:
    kpi, call = Kpi(), answered_call()
    events = [*agent_a1_before(call), *call.all]
    kpi.sink.refuse("offer_facts", times=2)

    kpi.run(*events)

    assert kpi.runner.stats.retries == 2
    assert kpi.sink.tables() == ["contact_facts"] * 3 + ["offer_facts", "agent_state_intervals"]
    expected = reference(events)
    assert kpi.sink.inserts[2:] == expected.inserts
    assert sum(kpi.broker.group_offsets["kpi"].values()) == len(events), "committed once, after the write"
    assert kpi.store.load(CONTACTS, "c-1").state.version == 13


def test_facts_clickhouse_refuses_for_what_they_hold_dead_letter_their_events_and_the_rest_go_on() -> None:
    kpi, poisoned, fine = Kpi(), answered_call("c-bad", "a-1"), answered_call("c-ok", "a-2")
    kpi.sink.refused_contacts.add("c-bad")

    kpi.run(*poisoned.all, *fine.all)

    dead = kpi.broker.records("deadletter.v1")
    assert dead and {record.key for record in dead} <= {b"c-bad", b"a-1"}, "only events of the refused call"
    assert all(b"Constraint" in dict(record.headers)["deadletter.reason"] for record in dead)
    assert {row["contact_id"] for row in kpi.sink.final("contact_facts").values()} == {"c-ok"}
    assert sum(kpi.broker.group_offsets["kpi"].values()) == len(poisoned.all) + len(fine.all)
    assert kpi.store.health.serving


def test_while_the_kpi_store_refuses_nothing_is_committed() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.sink.refuse("contact_facts", times=1)
    stopping = threading.Event()
    stopping.set()
    kpi.publish(*call.all)

    kpi.runner.run_once(stopping)

    assert kpi.broker.group_offsets.get("kpi") is None
    assert not kpi.knows("c-1")
    assert kpi.restarted().run() == 13, "a new member reads the whole batch again"


# forgetting ended contacts ------------------------------------------------------------------------


def test_a_contact_ended_longer_than_the_retention_ago_is_deleted_from_the_table() -> None:
    kpi, c1 = Kpi(), contact("c-1")
    kpi.run(c1.at(0, started("c-1")), c1.at(10, ended("c-1")))

    kpi.clock.now = T0 + timedelta(seconds=10) + timedelta(hours=1) - timedelta(seconds=1)
    kpi.run(contact("c-2").at(3600, started("c-2")))
    kept = kpi.knows("c-1")
    kpi.clock.now += timedelta(seconds=2)
    kpi.run(contact("c-3").at(3611, started("c-3")))

    assert kept
    assert not kpi.knows("c-1")
    assert kpi.knows("c-2") and kpi.knows("c-3")
    changelog = [record for record in kpi.broker.records(CONTACTS_TOPIC) if record.key == b"c-1"]
    assert changelog[-1].value is None, "a tombstone on the changelog"
    assert not kpi.restarted().knows("c-1")


def agents_last(ready: list[tuple[str, int]]) -> tuple[str, int]:
    """Every other topic's records before any agent's: as a rebuild may read them."""
    return min(ready, key=lambda key: (key[0] == "agents.events.v1", key))


def test_a_rebuild_long_after_a_call_forgets_it_only_once_its_agents_events_are_read_too() -> None:
    call, clock = answered_call(), Clock(t(170))
    rebuilt = Kpi(clock=clock, choose=agents_last)
    rebuilt.publish(*call.all)
    clock.now += timedelta(hours=3)

    rebuilt.run()

    assert rebuilt.sink.final("contact_facts") == reference(call.all).final("contact_facts")
    assert rebuilt.sink.final("contact_facts")["c-1:1"]["wrap_s"] == 30.0
    assert not rebuilt.knows("c-1"), "forgotten once every topic was read past its end"


def test_a_contact_still_in_wrap_up_is_kept_until_twice_the_retention() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.run(*call.intake, *call.routing, call.agents[0])
    end = T0 + timedelta(seconds=140)

    kpi.clock.now = end + timedelta(hours=1, minutes=30)
    kpi.run(contact("c-2").at(5540, started("c-2")))
    kept = kpi.knows("c-1")
    kpi.clock.now = end + timedelta(hours=2, seconds=1)
    kpi.run(contact("c-3").at(7341, started("c-3")))

    assert kept
    assert not kpi.knows("c-1")


def test_a_contact_whose_wrap_up_ended_late_is_deleted_once_the_retention_is_over() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.run(*call.intake, *call.routing, call.agents[0])
    end = T0 + timedelta(seconds=140)
    kpi.clock.now = end + timedelta(hours=1, minutes=1)
    kpi.run(call.agents[1])
    kpi.clock.now += timedelta(minutes=1)

    kpi.run(contact("c-2").at(3800, started("c-2")))

    assert not kpi.knows("c-1")


# the live board -----------------------------------------------------------------------------------


def test_the_board_shows_who_waits_per_queue_with_the_longest_wait_and_callbacks_apart() -> None:
    kpi = Kpi()
    c4 = entry("c-4")
    kpi.run(
        entry("c-1").at(0, queued("c-1", "billing", estimated_wait=duration(45))),
        entry("c-2").at(30, queued("c-2", "billing")),
        entry("c-3").at(40, queued("c-3", "sales")),
        c4.at(-100, queued("c-4", "billing")),
        c4.at(-90, routing_ev.CallbackScheduled(contact_id="c-4", queue_id="billing")),
    )

    billing, sales = kpi.board.queues(t(60))

    assert (billing.queue_id, billing.contacts_waiting, billing.callbacks_waiting) == ("billing", 2, 1)
    assert (billing.longest_wait_s, billing.estimated_wait_s) == (60.0, 45.0)
    assert (sales.queue_id, sales.contacts_waiting, sales.longest_wait_s) == ("sales", 1, 20.0)


def test_a_contact_leaves_the_board_when_answered_or_abandoned() -> None:
    kpi, c1, c2 = Kpi(), entry("c-1"), entry("c-2")
    kpi.run(c1.at(0, queued("c-1", "billing")), c2.at(30, queued("c-2", "billing")))

    kpi.run(c1.at(70, connected("c-1", "billing", "a-1", waited=70)))
    [after_answer] = kpi.board.queues(t(80))
    gave_up = routing_ev.ContactAbandoned(contact_id="c-2", queue_id="billing", waited=duration(60))
    kpi.run(c2.at(90, gave_up))
    [after_abandon] = kpi.board.queues(t(100))

    assert (after_answer.contacts_waiting, after_answer.longest_wait_s) == (1, 50.0)
    assert (after_abandon.contacts_waiting, after_abandon.longest_wait_s) == (0, 0.0)


def staffed_billing() -> list[Envelope]:
    """billing needs billing and english; a-1 has both (ready), a-2 only billing (ready), a-3 both and
    french (not ready), a-4 both but logged out again."""
    streams = {name: agent(name) for name in ("a-1", "a-2", "a-3", "a-4")}
    abilities = {
        "a-1": ("billing", "english"),
        "a-2": ("billing",),
        "a-3": ("billing", "english", "french"),
        "a-4": ("billing", "english"),
    }
    events = [queue("billing").at(0, queue_upserted("billing", "billing", "english"))]
    for name, a in streams.items():
        events.append(a.at(0, logged_in(name, abilities[name], ("billing",))))
        events.append(a.at(0, state_changed(name, LOGGED_OUT, NOT_READY if name == "a-3" else READY)))
    events += [
        streams["a-4"].at(5, state_changed("a-4", READY, LOGGED_OUT)),
        streams["a-4"].at(5, logged_out("a-4")),
    ]
    return events


def test_agents_per_state_for_a_queue_count_only_the_agents_with_all_its_skills() -> None:
    kpi = Kpi()

    kpi.run(*staffed_billing())

    [billing] = kpi.board.queues(t(10))
    assert billing.agents == {"ready": 1, "not_ready": 1}
    assert kpi.board.agents_for("billing") == 2
    assert kpi.sink.final("queue_settings")["billing"]["skills"] == ["billing", "english"]


def test_the_center_gauges_count_each_agent_once_whatever_its_skill_groups() -> None:
    kpi, a1, a2 = Kpi(), agent("a-1"), agent("a-2")
    kpi.run(
        a1.at(0, logged_in("a-1", ("billing",), ("billing", "sales", "vip"))),
        a1.at(0, state_changed("a-1", LOGGED_OUT, READY)),
        a2.at(0, logged_in("a-2", ("billing",), ("billing",))),
        a2.at(0, state_changed("a-2", LOGGED_OUT, NOT_READY)),
        entry("c-1").at(0, queued("c-1", "billing")),
        entry("c-2").at(20, queued("c-2", "sales")),
    )

    rows = gauge_rows(kpi.board, t(30))

    gauges = {(row["scope"], row["queue_id"], row["gauge"]): row["value"] for row in rows}
    center = {gauge: value for (scope, _, gauge), value in gauges.items() if scope == "center"}
    assert center["agents_ready"] == center["agents_not_ready"] == 1.0
    assert center["agents_on_contact"] == 0.0
    assert (center["contacts_waiting"], center["longest_wait_s"]) == (2.0, 30.0)
    per_group = {
        (key, gauge): value for (scope, key, gauge), value in gauges.items() if scope == "skill_group"
    }
    assert (per_group[("billing", "agents_ready")], per_group[("billing", "agents_not_ready")]) == (1.0, 1.0)
    assert (per_group[("sales", "agents_ready")], per_group[("vip", "agents_ready")]) == (1.0, 1.0)
    assert (
        gauges[("queue", "billing", "contacts_waiting")]
        == gauges[("queue", "sales", "contacts_waiting")]
        == 1.0
    )
    assert {row["measured_at"] for row in rows} == {t(30)}


def test_the_board_is_rebuilt_from_the_folds_after_a_restart() -> None:
    kpi, a1 = Kpi(), agent("a-1")
    kpi.run(
        a1.at(0, logged_in("a-1", ("billing",), ("billing",))),
        a1.at(0, state_changed("a-1", LOGGED_OUT, READY)),
        entry("c-1").at(0, queued("c-1", "billing")),
    )

    board = kpi.restarted().board

    [billing] = board.queues(t(30))
    assert (billing.contacts_waiting, billing.longest_wait_s, billing.agents) == (1, 30.0, {"ready": 1})


# found in review -------------------------------------------------------------------------------


def test_after_a_restart_the_board_still_counts_only_the_agents_able_to_serve_a_queue() -> None:
    kpi = Kpi()
    kpi.run(*staffed_billing(), entry("c-1").at(0, queued("c-1", "billing")))

    board = kpi.restarted().board

    [billing] = board.queues(t(10))
    assert billing.contacts_waiting == 1
    assert billing.agents == {"ready": 1, "not_ready": 1}


def test_the_answering_agents_skill_group_does_not_depend_on_the_order_topics_are_read() -> None:
    kpi, call = Kpi(), answered_call()

    kpi.run(*agent_a1_before(call), *call.all)

    assert kpi.sink.final("contact_facts")["c-1:1"]["skill_group"] == "billing"


def test_the_answering_agents_skill_group_comes_from_the_agents_fold() -> None:
    kpi, call = Kpi(), answered_call()
    kpi.run(*agent_a1_before(call))

    kpi.run(*call.all)

    assert kpi.sink.final("contact_facts")["c-1:1"]["skill_group"] == "billing"
    assert kpi.store.load(AGENTS, "a-1").state.skill_groups == ("billing", "sales")


# tickets ------------------------------------------------------------------------------------------


def test_a_tickets_events_write_its_ticket_dispatch_and_state_facts_once_per_batch() -> None:
    kpi, story = Kpi(), closed_loop()

    kpi.run(*story.events)

    assert kpi.sink.tables() == ["ticket_facts", "dispatch_facts", "ticket_state_intervals"]
    [ticket] = kpi.sink.final("ticket_facts").values()
    assert (ticket["status"], ticket["version"], ticket["dispatch_count"]) == ("closed", len(story.events), 3)
    assert sorted(kpi.sink.final("dispatch_facts")) == ["t-1:d1", "t-1:d2", "t-1:d3"]
    assert len(kpi.sink.final("ticket_state_intervals")) == 12
    assert kpi.store.load(TICKETS, "t-1").state.version == len(story.events)


def test_a_later_batch_rewrites_the_ticket_and_only_the_dispatches_its_events_changed() -> None:
    kpi, story = Kpi(), TicketStory()
    story.created(0)
    story.dispatched(HOUR, "d1", "housing")
    story.dispatched(HOUR, "d2", "transport")
    kpi.run(*story.events)
    written = len(kpi.sink.inserts)

    kpi.run(*story.accepted(2 * HOUR, "d2"))

    later = dict(kpi.sink.inserts[written:])
    assert [row["dispatch_id"] for row in later["dispatch_facts"]] == ["d2"]
    assert [row["version"] for row in later["ticket_facts"]] == [len(story.events)]
    assert "ticket_state_intervals" not in later, "the ticket stays dispatched"


def test_a_ticket_event_delivered_again_writes_nothing() -> None:
    kpi, story = Kpi(), closed_loop()
    kpi.run(*story.events)
    written = len(kpi.sink.inserts)

    kpi.run(*story.events[5:15])

    assert len(kpi.sink.inserts) == written


def test_the_ticket_folds_survive_a_restart_and_later_events_continue_the_facts() -> None:
    story = closed_loop()
    half = len(story.events) // 2
    kpi = Kpi()
    kpi.run(*story.events[:half])

    restarted = kpi.restarted(ListSink())
    restarted.run(*story.events[half:])

    expected = reference(story.events[:half], story.events[half:])
    for table in ("ticket_facts", "dispatch_facts", "ticket_state_intervals"):
        merged = {**kpi.sink.final(table), **restarted.sink.final(table)}
        assert merged == expected.final(table), table


def test_a_ticket_batch_refused_by_the_kpi_store_is_retried_and_committed_once() -> None:
    kpi, story = Kpi(), closed_loop()
    kpi.sink.refuse("dispatch_facts", times=1)

    kpi.run(*story.events)

    assert kpi.runner.stats.retries == 1
    assert kpi.sink.final("dispatch_facts") == reference(story.events).final("dispatch_facts")
    assert sum(kpi.broker.group_offsets["kpi"].values()) == len(story.events)


def test_a_closed_ticket_is_forgotten_once_its_reopening_window_and_the_retention_are_over() -> None:
    kpi, story = Kpi(), TicketStory()
    story.created(0)
    story.resolved(HOUR, elapsed_s=HOUR)
    story.closed(DAY, reopen_within=2 * DAY)
    kpi.run(*story.events)
    window_end = T0 + timedelta(days=3)

    kpi.clock.now = window_end + timedelta(minutes=59)
    kpi.run(*TicketStory("t-2").created(3 * DAY))
    kept = kpi.knows_ticket("t-1")
    kpi.clock.now = window_end + timedelta(hours=1, seconds=1)
    kpi.run(*TicketStory("t-3").created(3 * DAY + HOUR))

    assert kept
    assert not kpi.knows_ticket("t-1")
    assert kpi.knows_ticket("t-2") and kpi.knows_ticket("t-3")
    changelog = [record for record in kpi.broker.records(TICKETS_TOPIC) if record.key == b"t-1"]
    assert changelog[-1].value is None, "a tombstone on the changelog"
    assert not kpi.restarted().knows_ticket("t-1")


def test_a_ticket_reopened_within_its_window_is_kept() -> None:
    kpi, story = Kpi(), TicketStory()
    story.created(0)
    story.resolved(HOUR, elapsed_s=HOUR)
    story.closed(DAY, reopen_within=2 * DAY)
    kpi.run(*story.events)
    kpi.run(*story.reopened(2 * DAY))

    kpi.clock.now = T0 + timedelta(days=10)
    kpi.run(*TicketStory("t-2").created(10 * DAY))

    assert kpi.knows_ticket("t-1")
    assert kpi.sink.final("ticket_facts")["t-1"]["status"] == "in_progress"


def test_an_event_of_a_forgotten_ticket_writes_no_fact_and_keeps_no_fold() -> None:
    kpi, story = Kpi(), TicketStory()
    story.created(0)
    story.merged(HOUR)
    kpi.run(*story.events)
    kpi.clock.now = T0 + timedelta(hours=3)
    kpi.run(*TicketStory("t-2").created(3 * HOUR))
    written = len(kpi.sink.inserts)

    kpi.run(*story.at(4 * HOUR, ticket_ev.CsatRecorded(ticket_id="t-1", score=2)))

    assert not kpi.knows_ticket("t-1")
    assert len(kpi.sink.inserts) == written
    assert kpi.sink.final("ticket_facts")["t-1"]["csat_score"] is None


# approvals ----------------------------------------------------------------------------------------

SMALL, LARGE = 80_000, 2_000_000  # 800 CNY: the team lead alone; 20,000: lead, finance, legal


def finance_asks_for_information() -> ApprovalStory:
    story = ApprovalStory()
    story.requested(LARGE)
    story.decided(LEAD, at=1)
    story.decided(FINANCE, REQUEST_INFO, at=2)
    return story


def test_an_approval_requests_events_write_its_step_facts_once_per_batch() -> None:
    kpi, story = Kpi(clock=Clock(h(0))), finance_asks_for_information()

    kpi.run(*story.events)

    assert kpi.sink.tables() == ["approval_step_facts"]
    facts = kpi.sink.final("approval_step_facts")
    assert [(key, row["outcome"], row["paused_since"]) for key, row in sorted(facts.items())] == [
        ("ap-1:0:0", "approved", None),
        ("ap-1:1:0", "", h(2)),
    ]
    assert kpi.store.load(APPROVALS, "ap-1").state.version == len(story.events)


def test_a_later_batch_rewrites_only_the_stints_its_events_changed() -> None:
    kpi, story = Kpi(clock=Clock(h(0))), finance_asks_for_information()
    kpi.run(*story.events)
    written = len(kpi.sink.inserts)

    kpi.run(*story.info_provided(at=3))

    later = dict(kpi.sink.inserts[written:])
    assert [(row["step_fact_id"], row["paused_s"]) for row in later["approval_step_facts"]] == [
        ("ap-1:1:0", 3600.0)
    ]


def test_an_approval_event_delivered_again_writes_nothing() -> None:
    kpi, story = Kpi(clock=Clock(h(0))), finance_asks_for_information()
    kpi.run(*story.events)
    written = len(kpi.sink.inserts)

    kpi.run(*story.events[2:])

    assert len(kpi.sink.inserts) == written


def test_the_approval_folds_survive_a_restart_and_later_events_continue_the_facts() -> None:
    story = finance_asks_for_information()
    first = len(story.events)
    story.info_provided(at=3)
    story.decided(FINANCE, at=4)
    story.decided(LEGAL, at=5)
    kpi = Kpi(clock=Clock(h(0)))
    kpi.run(*story.events[:first])

    restarted = kpi.restarted(ListSink())
    restarted.run(*story.events[first:])

    expected = reference(story.events[:first], story.events[first:]).final("approval_step_facts")
    merged = {**kpi.sink.final("approval_step_facts"), **restarted.sink.final("approval_step_facts")}
    assert merged == expected
    assert [row["outcome"] for _, row in sorted(merged.items())] == ["approved"] * 3


def test_an_ended_request_is_forgotten_once_the_retention_is_over() -> None:
    kpi, story = Kpi(clock=Clock(h(0))), ApprovalStory()
    story.requested(SMALL)
    story.decided(LEAD, at=1)  # granted at 1 h
    kpi.run(*story.events)

    kpi.clock.now = h(1) + timedelta(minutes=59)
    kpi.run(*ApprovalStory("ap-2").requested(SMALL, at=1.9))
    kept = kpi.knows_approval("ap-1")
    kpi.clock.now = h(2) + timedelta(seconds=1)
    kpi.run(*ApprovalStory("ap-3").requested(SMALL, at=2))

    assert kept
    assert not kpi.knows_approval("ap-1")
    assert kpi.knows_approval("ap-2") and kpi.knows_approval("ap-3")
    changelog = [record for record in kpi.broker.records(APPROVALS_TOPIC) if record.key == b"ap-1"]
    assert changelog[-1].value is None, "a tombstone on the changelog"
    assert not kpi.restarted().knows_approval("ap-1")


def test_a_pending_request_is_kept_however_long_it_waits() -> None:
    kpi, story = Kpi(clock=Clock(h(0))), finance_asks_for_information()
    kpi.run(*story.events)

    kpi.clock.now = h(24 * 30)
    kpi.run(*ApprovalStory("ap-2").requested(SMALL, at=24 * 30))

    assert kpi.knows_approval("ap-1")


def test_an_event_of_a_forgotten_request_writes_no_fact_and_keeps_no_fold() -> None:
    kpi, story = Kpi(clock=Clock(h(0))), ApprovalStory()
    story.requested(SMALL)
    story.withdrawn(at=1)
    kpi.run(*story.events)
    kpi.clock.now = h(3)
    kpi.run(*ApprovalStory("ap-2").requested(SMALL, at=3))
    written = len(kpi.sink.inserts)

    kpi.run(*story.events[1:])  # redelivered long after, from the opened step on

    assert not kpi.knows_approval("ap-1")
    assert len(kpi.sink.inserts) == written
    assert kpi.sink.final("approval_step_facts")["ap-1:0:0"]["outcome"] == "withdrawn"
