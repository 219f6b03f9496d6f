"""Plays the telephony adapter and the agent desktops of a scenario against the running services.

Callers reach intake over gRPC (StartContact, IVR selection, hold, transfer, hang-up, callbacks);
agents log in, take breaks and answer the offers routing makes (which reach their desktops from
routing.events.v1, as a desktop's push channel would). All simulation state lives on one loop
thread; gRPC calls run on a pool and post their outcome back to the loop. Every contact's ground
truth (when it arrived, how it ended, how long it waited) is kept for comparison with the KPIs.
"""

from __future__ import annotations

import heapq
import itertools
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from callcenter.agents.v1 import events_pb2 as agent_ev
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.agents.v1 import service_pb2_grpc as agents_grpc
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.intake.v1 import service_pb2 as intake_pb
from callcenter.intake.v1 import service_pb2_grpc as intake_grpc
from callcenter.kpi.v1 import service_pb2_grpc as kpi_grpc
from callcenter.routing.v1 import events_pb2 as routing_ev
from callcenter.routing.v1 import service_pb2 as routing_pb
from callcenter.routing.v1 import service_pb2_grpc as routing_grpc
from confluent_kafka import Consumer, TopicPartition
from google.protobuf.duration_pb2 import Duration

from services.platform.envelope import EventRegistry, PoisonEvent, decode
from services.platform.kafka import consumer_config
from services.platform.settings import KafkaSettings
from simulator.scenario import AgentPlan, Caller, Habits, Scenario, agent_plans, callers

VOICE = types_pb2.Channel.CHANNEL_VOICE
END = intake_ev.ContactEndReason
REASONS = {"break": 1, "lunch": 2, "training": 3, "meeting": 4, "coaching": 5}
FINAL = ("answered", "abandoned", "self_service", "disconnected", "callback_cancelled", "ended_by_run")


@dataclass
class Endpoints:
    intake: str
    routing: str
    agents: str
    kafka: KafkaSettings
    kpi: str = ""  # the KPI service, for the wallboard and the report; none when empty


@dataclass
class Contact:
    """The simulator's record of one contact: what its caller did and how it went."""

    contact_id: str
    caller: Caller
    queue_id: str
    arrived_at: datetime
    phase: str = "ivr"
    agent_id: str = ""
    offer_id: str = ""
    queued_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wrapped_at: datetime | None = None
    outcome: str = ""
    offers: int = 0
    transferred: bool = False
    callback: bool = False

    @property
    def waiting(self) -> bool:
        return self.phase in ("queued", "ringing", "callback")

    def truth(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "queue_id": self.queue_id,
            "arrived_at": self.arrived_at.isoformat(),
            "queued_at": self.queued_at.isoformat() if self.queued_at else None,
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "wrapped_at": self.wrapped_at.isoformat() if self.wrapped_at else None,
            "outcome": self.outcome,
            "agent_id": self.agent_id,
            "offers": self.offers,
            "transferred": self.transferred,
            "callback": self.callback,
            "vip": self.caller.vip,
        }


@dataclass
class Agent:
    plan: AgentPlan
    agent_id: str
    habits: Habits
    phase: str = "logged_out"
    contact_id: str = ""
    next_break_at: float = 0.0


@dataclass
class Tally:
    arrivals: int = 0
    offers: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    calls: int = 0


class Simulation:
    """One run of a scenario: ``setup``, ``run`` until its duration (and a drain), then ``teardown``."""

    def __init__(
        self,
        scenario: Scenario,
        endpoints: Endpoints,
        *,
        run_id: str | None = None,
        workers: int = 32,
    ) -> None:
        self.scenario = scenario
        self.run_id = run_id or f"s{scenario.seed}-{int(time.time()) % 10**6}"
        self.endpoints = endpoints
        self.tally = Tally()
        self.contacts: dict[str, Contact] = {}
        self.agents: dict[str, Agent] = {}
        self._channels = [
            grpc.insecure_channel(address)
            for address in (endpoints.intake, endpoints.routing, endpoints.agents)
        ]
        self.intake = intake_grpc.IntakeServiceStub(self._channels[0])
        self.routing = routing_grpc.RoutingServiceStub(self._channels[1])
        self.desktops = agents_grpc.AgentsServiceStub(self._channels[2])
        self.kpis: kpi_grpc.KpiServiceStub | None = None
        if endpoints.kpi:
            self._channels.append(grpc.insecure_channel(endpoints.kpi))
            self.kpis = kpi_grpc.KpiServiceStub(self._channels[-1])
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-grpc")
        self._inbox: queue.Queue[Callable[[], None]] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._requests = itertools.count()
        self._started = time.monotonic()
        self._arrivals: Iterator[Caller] = iter(())
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._stop_listening = threading.Event()
        self._counting = threading.Lock()
        self._in_flight = 0

    # The loop -------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self.elapsed() + max(0.0, delay_s), next(self._sequence), action))

    def call(
        self,
        method: Callable[..., Any],
        request: Any,
        then: Callable[[Any], None] | None = None,
        failed: Callable[[grpc.RpcError], None] | None = None,
    ) -> None:
        """Call gRPC on the pool; ``then`` or ``failed`` runs on the loop afterwards."""

        def work() -> None:
            try:
                response = method(request, timeout=30)
            except grpc.RpcError as error:
                self._inbox.put(lambda error=error: self._failed(error, failed))
                return
            finally:
                with self._counting:
                    self._in_flight -= 1
            if then is not None:
                self._inbox.put(lambda: then(response))

        self.tally.calls += 1
        with self._counting:
            self._in_flight += 1
        self._pool.submit(work)

    def _failed(self, error: grpc.RpcError, handler: Callable[[grpc.RpcError], None] | None) -> None:
        self.tally.errors[error.code().name] += 1
        if handler is not None:
            handler(error)

    def request_id(self, what: str) -> str:
        return f"{self.run_id}/{what}/{next(self._requests)}"

    def setup(self) -> None:
        """Queues configured for the scenario, agents logged in, the offer channel open."""
        for plan in self.scenario.queues:
            self._upsert_queue(plan)
        self._listener = threading.Thread(target=self._listen, name="sim-offers", daemon=True)
        self._listener.start()
        if not self._listening.wait(30):
            raise RuntimeError("the simulator's desktop channel (routing.events.v1) did not open")
        for plan in agent_plans(self.scenario):
            agent_id = f"{self.run_id}-a{plan.index:03d}"
            habits = Habits(self.scenario)
            habits.rng.seed(plan.seed)
            agent = Agent(plan, agent_id, habits)
            self.agents[agent_id] = agent
            self.desktops.Login(
                agents_pb.LoginRequest(
                    request_id=self.request_id("login"),
                    agent_id=agent_id,
                    display_name=f"Agent {plan.index}",
                    skills=[types_pb2.SkillLevel(skill=s, proficiency=p) for s, p in plan.skills],
                    ready=True,
                ),
                timeout=30,
            )
            agent.phase = "ready"
            agent.next_break_at = habits.next_break_in()
        self._started = time.monotonic()
        self._arrivals = callers(self.scenario)
        self._schedule_next_arrival()

    def _upsert_queue(self, plan: Any) -> None:
        s = self.scenario
        config = routing_ev.QueueConfig(
            queue_id=plan.queue_id,
            name=plan.queue_id.title(),
            required_skills=[types_pb2.SkillLevel(skill=plan.skill, proficiency=2)],
            priority=plan.priority,
            reject_delay=_seconds(s.reject_delay_s),
            ring_timeout=_seconds(s.ring_timeout_s),
            wrap_up_time=_seconds(s.wrap_up_time_s),
            wrap_up_mode=routing_ev.WrapUpMode.WRAP_UP_MODE_MANDATORY_WITH_TIMEOUT,
            short_abandon_threshold=_seconds(s.short_abandon_s),
            vip_priority_boost=30,
            callback_priority_boost=10,
        )
        step = config.escalation_steps.add(min_proficiency=1)
        step.after.FromSeconds(int(s.max_wait_s / 3))
        if plan.overflow_to:
            config.max_wait.CopyFrom(_seconds(s.max_wait_s))
            config.fallback = routing_ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW
            config.fallback_queue_id = plan.overflow_to
        try:
            version = self.routing.GetQueue(
                routing_pb.GetQueueRequest(queue_id=plan.queue_id), timeout=30
            ).version
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            version = 0
        request = routing_pb.UpsertQueueRequest(
            request_id=self.request_id("queue"), config=config, expected_version=version
        )
        self.routing.UpsertQueue(request, timeout=30)

    def run(
        self,
        stop: threading.Event | None = None,
        on_tick: Callable[[Simulation], None] | None = None,
        tick_s: float = 1.0,
        drain_s: float = 60.0,
    ) -> Tally:
        """Play the scenario for its duration, then let the contacts still in the center finish."""
        stop = stop or threading.Event()
        next_tick = 0.0
        ending = False
        while not stop.is_set():
            now = self.elapsed()
            if not ending and now >= self.scenario.duration_s:
                ending = True
                end_by = now + drain_s
            if ending and (now >= end_by or not self._open_contacts()):
                break
            self._run_due(now)
            if on_tick is not None and now >= next_tick:
                on_tick(self)
                next_tick = now + tick_s
            wait = min(0.05, max(0.0, self._timers[0][0] - now)) if self._timers else 0.05
            try:
                action = self._inbox.get(timeout=wait)
            except queue.Empty:
                continue
            action()
        return self.tally

    def _run_due(self, now: float) -> None:
        while True:
            try:
                self._inbox.get_nowait()()
            except queue.Empty:
                break
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            action()

    def _open_contacts(self) -> list[Contact]:
        return [c for c in self.contacts.values() if c.outcome not in FINAL]

    def teardown(self, timeout_s: float = 30.0) -> None:
        """The day ends: callers still on the line hang up, agents log out, the channel closes."""
        for contact in self._open_contacts():
            if contact.phase in ("talking", "answering"):
                self._end(contact, END.CONTACT_END_REASON_AGENT, "answered")
            else:
                self._end(contact, END.CONTACT_END_REASON_CALLER, "ended_by_run")
        self._settle_calls(timeout_s)
        deadline = time.monotonic() + timeout_s
        pending = list(self.agents.values())
        while pending and time.monotonic() < deadline:
            # A contact's end reaches the agents service by its reaction; a logout before it is refused.
            still = []
            for agent in pending:
                logout = agents_pb.ForceStateRequest(
                    request_id=self.request_id("logout"),
                    agent_id=agent.agent_id,
                    state=agent_ev.AgentState.AGENT_STATE_LOGGED_OUT,
                )
                try:
                    self.desktops.ForceState(logout, timeout=30)
                    agent.phase = "logged_out"
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    still.append(agent)
            pending = still
            if pending:
                time.sleep(0.2)
        self.tally.errors.update({"not logged out": len(pending)} if pending else {})
        self._stop_listening.set()
        self._pool.shutdown(wait=True)
        for channel in self._channels:
            channel.close()

    def _settle_calls(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._in_flight:
            self._run_due(self.elapsed())
            time.sleep(0.02)
        self._run_due(self.elapsed())

    def write_truth(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            out.write(json.dumps({"scenario": asdict(self.scenario), "run_id": self.run_id}) + "\n")
            for contact in self.contacts.values():
                out.write(json.dumps(contact.truth()) + "\n")

    # Callers ------------------------------------------------------------------------------------

    def _schedule_next_arrival(self) -> None:
        caller = next(self._arrivals, None)
        if caller is not None:
            self.later(caller.at_s - self.elapsed(), lambda: self._arrive(caller))

    def _arrive(self, caller: Caller) -> None:
        self._schedule_next_arrival()
        self.tally.arrivals += 1
        contact = Contact(f"{self.run_id}-c{caller.index:06d}", caller, caller.queue_id, _now())
        self.contacts[contact.contact_id] = contact
        start = intake_pb.StartContactRequest(
            request_id=self.request_id("start"),
            contact_id=contact.contact_id,
            channel=VOICE,
            caller_number=caller.number,
            dialed_number="+442071230000",
            gateway="simulator",
            language="en",
        )
        self.call(self.intake.StartContact, start, then=lambda _: self._ivr(contact))

    def _ivr(self, contact: Contact) -> None:
        caller = contact.caller
        if caller.self_service:
            selection = intake_pb.RecordIvrSelectionRequest(
                request_id=self.request_id("ivr"),
                contact_id=contact.contact_id,
                menu="main",
                selection="9",
                self_service_completed=True,
            )
            self.call(
                self.intake.RecordIvrSelection,
                selection,
                then=lambda _: self._end(contact, END.CONTACT_END_REASON_SELF_SERVICE, "self_service"),
            )
            return
        selection = intake_pb.RecordIvrSelectionRequest(
            request_id=self.request_id("ivr"),
            contact_id=contact.contact_id,
            menu="main",
            selection=str(1 + [q.queue_id for q in self.scenario.queues].index(contact.queue_id)),
            queue_id=contact.queue_id,
        )
        contact.phase, contact.queued_at = "queued", _now()
        self.call(self.intake.RecordIvrSelection, selection)
        self.later(caller.patience_s, lambda: self._patience_runs_out(contact))

    def _patience_runs_out(self, contact: Contact) -> None:
        if contact.phase not in ("queued", "ringing") or contact.outcome:
            return
        if contact.caller.wants_callback:
            contact.phase, contact.callback = "callback", True
            request = intake_pb.RequestCallbackRequest(
                request_id=self.request_id("callback"), contact_id=contact.contact_id
            )
            self.call(self.intake.RequestCallback, request)
            return
        self._end(contact, END.CONTACT_END_REASON_CALLER, "abandoned")

    def _end(self, contact: Contact, reason: int, outcome: str) -> None:
        contact.phase, contact.outcome, contact.ended_at = "ended", outcome, _now()
        self.tally.outcomes[outcome] += 1
        request = intake_pb.EndContactRequest(
            request_id=self.request_id("end"), contact_id=contact.contact_id, reason=reason
        )
        self.call(self.intake.EndContact, request)

    # Agents -------------------------------------------------------------------------------------

    def _offered(self, offer: routing_ev.ContactOffered) -> None:
        agent = self.agents.get(offer.agent_id)
        contact = self.contacts.get(offer.contact_id)
        if agent is None or contact is None:
            return
        self.tally.offers += 1
        contact.offers += 1
        agent.phase, agent.contact_id = "offered", contact.contact_id
        if contact.waiting:
            contact.phase = "ringing" if contact.phase == "queued" else contact.phase
        reaction = agent.habits.reaction()
        if reaction == "miss":
            # The agent is away from the desk; the offer rings out and they come back a little later.
            self.later(self.scenario.ring_timeout_s + 1.5, lambda: self._back_after_missing(agent))
            return
        self.later(
            agent.habits.answer_delay(), lambda: self._answer(agent, contact, offer.offer_id, reaction)
        )

    def _answer(self, agent: Agent, contact: Contact, offer_id: str, reaction: str) -> None:
        if reaction == "reject" or not contact.waiting:
            request = agents_pb.RejectOfferRequest(
                request_id=self.request_id("reject"),
                agent_id=agent.agent_id,
                offer_id=offer_id,
                reason="busy",
            )
            self.call(
                self.desktops.RejectOffer,
                request,
                then=lambda _: self._ready(agent),
                failed=lambda _: self._ready(agent),
            )
            if contact.phase == "ringing":
                contact.phase = "queued"
            return
        was = contact.phase
        contact.phase = "answering"
        accept = agents_pb.AcceptOfferRequest(
            request_id=self.request_id("accept"), agent_id=agent.agent_id, offer_id=offer_id
        )

        def refused(_: grpc.RpcError) -> None:
            # The offer ended first (it rang out, or the caller hung up): the agent is free again.
            if contact.phase == "answering":
                contact.phase = "queued" if was == "ringing" else was
            self._ready(agent)

        self.call(
            self.desktops.AcceptOffer, accept, then=lambda _: self._connect(agent, contact), failed=refused
        )

    def _connect(self, agent: Agent, contact: Contact) -> None:
        agent.phase = "talking"
        contact.phase, contact.agent_id = "talking", agent.agent_id
        if contact.answered_at is None:
            contact.answered_at = _now()
        answered = intake_pb.ReportAnsweredRequest(
            request_id=self.request_id("answered"), contact_id=contact.contact_id, agent_id=agent.agent_id
        )
        self.call(self.intake.ReportAnswered, answered)
        talk = contact.caller.handle_s
        if contact.caller.hold and not contact.transferred:
            self.later(talk / 3, lambda: self._hold(contact))
        self.later(talk, lambda: self._talk_ends(agent, contact))

    def _hold(self, contact: Contact) -> None:
        if contact.phase != "talking":
            return
        hold = intake_pb.ReportHoldRequest(request_id=self.request_id("hold"), contact_id=contact.contact_id)
        resume = intake_pb.ReportResumeRequest(
            request_id=self.request_id("resume"), contact_id=contact.contact_id
        )
        self.call(
            self.intake.ReportHold,
            hold,
            then=lambda _: self.later(
                contact.caller.handle_s / 4, lambda: self.call(self.intake.ReportResume, resume)
            ),
        )

    def _talk_ends(self, agent: Agent, contact: Contact) -> None:
        if contact.caller.transfer_to and not contact.transferred:
            contact.transferred, contact.phase = True, "queued"
            contact.queue_id = contact.caller.transfer_to
            transfer = intake_pb.ReportTransferRequest(
                request_id=self.request_id("transfer"),
                contact_id=contact.contact_id,
                to_queue_id=contact.caller.transfer_to,
            )
            self.call(self.intake.ReportTransfer, transfer)
        else:
            reason = (
                END.CONTACT_END_REASON_CALLER
                if contact.caller.hangs_up_first
                else END.CONTACT_END_REASON_AGENT
            )
            self._end(contact, reason, "answered")
        agent.phase = "wrap_up"
        if agent.habits.lets_wrap_up_time_out():
            self.later(self.scenario.wrap_up_time_s + 1.0, lambda: self._ready(agent))
        else:
            self.later(
                contact.caller.wrap_up_s,
                lambda: self._complete_wrap_up(agent, contact.contact_id, attempts=5),
            )

    def _complete_wrap_up(self, agent: Agent, contact_id: str, attempts: int) -> None:
        # The wrap-up a desktop completes ends when the agents service accepts it.
        if agent.phase != "wrap_up":
            return
        request = agents_pb.CompleteWrapUpRequest(
            request_id=self.request_id("wrap"),
            agent_id=agent.agent_id,
            contact_id=contact_id,
            disposition_code="resolved",
        )

        def retry(error: grpc.RpcError) -> None:
            # The end of the contact may not have reached the agents service yet.
            if attempts > 1 and error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.later(0.3, lambda: self._complete_wrap_up(agent, contact_id, attempts - 1))
            else:
                self._ready(agent)

        def wrapped(_: object) -> None:
            contact = self.contacts.get(contact_id)
            if contact is not None:
                contact.wrapped_at = _now()
            self._ready(agent)

        self.call(self.desktops.CompleteWrapUp, request, then=wrapped, failed=retry)

    def _back_after_missing(self, agent: Agent) -> None:
        if agent.phase != "offered":
            return
        request = agents_pb.SetReadyRequest(request_id=self.request_id("ready"), agent_id=agent.agent_id)
        self.call(
            self.desktops.SetReady,
            request,
            then=lambda _: self._ready(agent),
            failed=lambda _: self._ready(agent),
        )

    def _ready(self, agent: Agent) -> None:
        agent.phase, agent.contact_id = "ready", ""
        if self.elapsed() >= agent.next_break_at:
            self._take_break(agent)

    def _take_break(self, agent: Agent) -> None:
        reason = agent.habits.break_reason()
        agent.phase = "break"
        length = agent.habits.break_length()
        agent.next_break_at = self.elapsed() + length + agent.habits.next_break_in()
        request = agents_pb.SetNotReadyRequest(
            request_id=self.request_id("break"),
            agent_id=agent.agent_id,
            reason=REASONS[reason],
            reason_detail=reason,
        )

        def back() -> None:
            ready = agents_pb.SetReadyRequest(request_id=self.request_id("ready"), agent_id=agent.agent_id)
            self.call(
                self.desktops.SetReady,
                ready,
                then=lambda _: self._ready(agent),
                failed=lambda _: self._ready(agent),
            )

        def refused(_: grpc.RpcError) -> None:
            if agent.phase == "break":
                agent.phase = "ready"

        self.call(self.desktops.SetNotReady, request, then=lambda _: self.later(length, back), failed=refused)

    # The desktops' push channel: routing's decisions ---------------------------------------------

    def _listen(self) -> None:
        registry = EventRegistry.of(routing_ev)
        consumer = Consumer(
            consumer_config(
                self.endpoints.kafka, f"{self.run_id}-desktops", **{"enable.partition.eof": False}
            )
        )
        topic = "routing.events.v1"
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        start = [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
            for p in partitions
        ]
        consumer.assign(start)
        self._listening.set()
        prefix = f"{self.run_id}-"
        try:
            while not self._stop_listening.is_set():
                for message in consumer.consume(500, timeout=0.2):
                    if message.error() is not None or not (message.key() or b"").decode().startswith(prefix):
                        continue
                    try:
                        envelope = decode(message.value(), message.headers(), registry)
                    except PoisonEvent:
                        continue
                    self._inbox.put(lambda e=envelope: self._routing_event(e))
        finally:
            consumer.close()

    def _routing_event(self, envelope: Any) -> None:
        event = envelope.payload
        match envelope.event_type:
            case "ContactOffered":
                self._offered(event)
            case "ContactOverflowed":
                contact = self.contacts.get(event.contact_id)
                if contact is not None:
                    contact.queue_id = event.to_queue_id
            case "ContactDisconnected" | "QueueJoinRefused":
                contact = self.contacts.get(event.contact_id)
                overflowing = (
                    envelope.event_type == "QueueJoinRefused"
                    and event.outcome == routing_ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW
                )
                if contact is not None and not overflowing and not contact.outcome:
                    contact.phase, contact.outcome, contact.ended_at = "ended", "disconnected", _now()
                    self.tally.outcomes["disconnected"] += 1

    # For the wallboard ---------------------------------------------------------------------------

    def agent_phases(self) -> Counter[str]:
        return Counter(agent.phase for agent in self.agents.values())


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def _now() -> datetime:
    return datetime.now(UTC)
