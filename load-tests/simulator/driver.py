"""Plays the telephony adapter and the agent desktops of a scenario against the running services.

Callers reach intake over gRPC (StartContact, IVR selection, hold, transfer, hang-up, callbacks);
agents log in, take breaks and answer, reject or miss the offers that ring at their desks (a desk
rings when the agents service reserves its agent, heard on agents.events.v1 as a desktop's push
channel would; routing.events.v1 tells of overflows). All simulation state lives on one loop
thread; gRPC calls run on a pool and post their outcome back to the loop. The ground truth is kept
for comparison with the KPIs: each contact's queue visits (when queued, answered, ended, wrapped
up, and how each ended) and each desk's timeline of states and its offers' outcomes, stamped when
the simulator acts or hears of it. Given the tickets service, its back office (backoffice.py) plays
the center's ticket desk and the departments on the same loop, and given the approvals service too,
the approvers of the tickets that need sign-off.
"""

from __future__ import annotations

import heapq
import itertools
import json
import queue
import threading
import time
from collections import Counter, deque
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
from services.platform.settings import KafkaSettings, TicketsSettings
from services.tickets.policies import load_rules
from simulator.backoffice import Backoffice
from simulator.callers import CallerChannel
from simulator.scenario import AgentPlan, Caller, Habits, Scenario, agent_plans, callers

VOICE = types_pb2.Channel.CHANNEL_VOICE
END = intake_ev.ContactEndReason
REASONS = {"break": 1, "lunch": 2, "training": 3, "meeting": 4, "coaching": 5}
FINAL = (
    "answered",
    "abandoned",
    "self_service",
    "disconnected",
    "callback_cancelled",
    "ended_by_run",
    "refused",
)
RETRIABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
# A new call refused as the center is at capacity is not sent again: the caller hears the busy
# announcement (a telephony adapter does not hold a caller to retry a start for minutes).
RETRIABLE_START = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Endpoints:
    intake: str
    routing: str
    agents: str
    kafka: KafkaSettings
    kpi: str = ""  # the KPI service, for the wallboard and the report; none when empty
    tickets: str = ""  # the tickets service, for the back office; none (no tickets asked) when empty
    # the approvals service, for the back office's approvers; none (no ticket asks for approval) when empty
    approvals: str = ""


@dataclass
class Visit:
    """One wait of a contact in one queue, and how it ended (a transfer or overflow begins another)."""

    queue_id: str
    queued_at: datetime
    answered_at: datetime | None = None
    agent_id: str = ""
    ended_at: datetime | None = None
    wrapped_at: datetime | None = None
    outcome: str = ""
    offers: int = 0
    transferred: bool = False
    callback: bool = False

    def close(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome, self.ended_at = outcome, _now()

    def truth(self) -> dict[str, Any]:
        return {name: _iso(value) for name, value in asdict(self).items()}


@dataclass
class Contact:
    """The simulator's record of one contact: what its caller did and how it went."""

    contact_id: str
    caller: Caller
    arrived_at: datetime
    phase: str = "ivr"
    started: bool = False  # intake took it (a contact refused at the door was never in the center)
    ringing: str = ""  # the agent whose desk rings for it, if any
    ended_at: datetime | None = None
    outcome: str = ""
    visits: list[Visit] = field(default_factory=list)
    # Telephony's reports about it not yet answered, in order: the first is in flight.
    reports: deque[Callable[[], None]] = field(default_factory=deque)

    @property
    def waiting(self) -> bool:
        return self.phase in ("queued", "ringing", "callback")

    @property
    def visit(self) -> Visit | None:
        return self.visits[-1] if self.visits else None

    @property
    def transferred(self) -> bool:
        return any(visit.transferred for visit in self.visits)

    def queue(self, visit: Visit) -> None:
        self.phase = "queued"
        self.visits.append(visit)

    def truth(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "caller": self.caller.number,
            "arrived_at": _iso(self.arrived_at),
            "ended_at": _iso(self.ended_at),
            "outcome": self.outcome,
            "vip": self.caller.vip,
            "visits": [visit.truth() for visit in self.visits],
        }


@dataclass
class Agent:
    """An agent's desk: what it is doing, and the timeline of states it went through."""

    plan: AgentPlan
    agent_id: str
    habits: Habits
    phase: str = "logged_out"
    ringing: str = ""  # the offer ringing at the desk, if any
    wrapping: Visit | None = None  # the visit whose after-contact work the agent is doing
    next_break_at: float = 0.0
    timeline: list[tuple[datetime, str, str]] = field(default_factory=list)
    offers: Counter[str] = field(default_factory=Counter)

    def becomes(self, state: str, reason: str = "") -> None:
        """The desk shows a new state (as the agents service records it: see AgentState)."""
        if not self.timeline or self.timeline[-1][1:] != (state, reason):
            self.timeline.append((_now(), state, reason))

    def ended_wrap_up_before_logout(self, at: datetime) -> None:
        """The service ended the wrap-up (its timeout) just before the day's logout reached it."""
        if self.wrapping is None or len(self.timeline) < 2:
            return
        (wrapping_since, before, _), (logged_out_at, state, _) = self.timeline[-2:]
        # A ready from before this wrap-up (a late push of an earlier one) is not this wrap-up's end.
        if state == "logged_out" and before == "wrap_up" and at >= wrapping_since:
            self.timeline.insert(len(self.timeline) - 1, (min(at, logged_out_at), "ready", ""))
            self.wrapping.wrapped_at = min(at, logged_out_at)

    def rang_before_break(self) -> None:
        """An offer reserved the agent an instant before the desk's not-ready, which rejected it."""
        at, state, _ = self.timeline[-1]
        if state == "not_ready":
            self.timeline.insert(len(self.timeline) - 1, (at, "reserved", ""))
        else:
            self.becomes("reserved")
        self.offers["rejected"] += 1

    def truth(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "timeline": [(_iso(at), state, reason) for at, state, reason in self.timeline],
            "offers": dict(self.offers),
        }


@dataclass
class Tally:
    arrivals: int = 0
    offers: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    twin_errors: Counter[str] = field(default_factory=Counter)
    twin_details: list[str] = field(default_factory=list)
    error_details: list[str] = field(default_factory=list)
    # The generator's own delays, apart from the system's: how late each caller arrived against the
    # scenario's plan, and how long each call waited for a free worker before it was sent.
    arrival_late_s: list[float] = field(default_factory=list)
    send_wait_s: list[float] = field(default_factory=list)
    refused_in_s: list[float] = field(default_factory=list)  # a refused caller's wait for the refusal


class Simulation:
    """One run of a scenario: ``setup``, ``run`` until its duration (and a drain), then ``teardown``."""

    def __init__(
        self,
        scenario: Scenario,
        endpoints: Endpoints,
        *,
        run_id: str | None = None,
        workers: int = 32,
        retry_for_s: float = 0.0,
        duplicate_requests: bool = False,
    ) -> None:
        """``retry_for_s``: a call refused as UNAVAILABLE, RESOURCE_EXHAUSTED or past its deadline is
        sent again, the same request with the same request id, for up to this long (as a telephony
        adapter or a desktop should; a new call refused at capacity is not: see RETRIABLE_START).
        ``duplicate_requests``: every call goes out twice at once."""
        self.scenario = scenario
        self.retry_for_s = retry_for_s
        self.duplicate_requests = duplicate_requests
        self.run_id = run_id or f"s{scenario.seed}-{int(time.time()) % 10**6}"
        self.endpoints = endpoints
        self.tally = Tally()
        self.contacts: dict[str, Contact] = {}
        self.agents: dict[str, Agent] = {}
        self._channels = [
            CallerChannel(address) for address in (endpoints.intake, endpoints.routing, endpoints.agents)
        ]
        self.intake = intake_grpc.IntakeServiceStub(self._channels[0])
        self.routing = routing_grpc.RoutingServiceStub(self._channels[1])
        self.desktops = agents_grpc.AgentsServiceStub(self._channels[2])
        self.kpis: kpi_grpc.KpiServiceStub | None = None
        if endpoints.kpi:
            self._channels.append(CallerChannel(endpoints.kpi))
            self.kpis = kpi_grpc.KpiServiceStub(self._channels[-1])
        self.backoffice: Backoffice | None = None
        if endpoints.tickets:
            catalogue = load_rules(TicketsSettings().config_dir, TicketsSettings().calendars_dir).catalogue
            self.backoffice = Backoffice(
                self, endpoints.tickets, list(catalogue.departments), endpoints.approvals
            )
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
        self._catch_up = threading.Event()
        self._caught_up = threading.Event()
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
        failed: Callable[[grpc.RpcError], bool | None] | None = None,
        retriable: tuple[grpc.StatusCode, ...] = RETRIABLE,
    ) -> None:
        """Call gRPC on the pool; ``then`` or ``failed`` runs on the loop afterwards."""

        submitted = time.monotonic()

        def work() -> None:
            waited = time.monotonic() - submitted
            with self._counting:
                self.tally.send_wait_s.append(waited)
            # The answer is in the inbox before the call stops counting as in flight, so a loop
            # that waits for no calls in flight (the day's end) sees every answer.
            try:
                response = self._send(method, request, retriable)
                if then is not None:
                    self._inbox.put(lambda: then(response))
            except grpc.RpcError as error:
                what = getattr(method, "_method", b"") or type(request).__name__
                self._inbox.put(lambda error=error, what=what: self._failed(error, failed, str(what)))
            finally:
                with self._counting:
                    self._in_flight -= 1

        def twin() -> None:
            # The same request again, racing the first: it must get the same answer, or wait for it.
            try:
                self._send(method, request, retriable)
            except grpc.RpcError as error:
                with self._counting:
                    self.tally.twin_errors[error.code().name] += 1
                    if self.tally.twin_errors[error.code().name] <= 5:
                        what = getattr(method, "_method", b"") or type(request).__name__
                        self.tally.twin_details.append(f"{what}: {error.code().name}: {error.details()}")
            finally:
                with self._counting:
                    self._in_flight -= 1

        self.tally.calls += 1
        with self._counting:
            self._in_flight += 2 if self.duplicate_requests else 1
        self._pool.submit(work)
        if self.duplicate_requests:
            self._pool.submit(twin)

    def _report(
        self,
        contact: Contact,
        method: Callable[..., Any],
        request: Any,
        then: Callable[[Any], None] | None = None,
        failed: Callable[[grpc.RpcError], bool | None] | None = None,
        retriable: tuple[grpc.StatusCode, ...] = RETRIABLE,
    ) -> None:
        """A report of telephony about one contact, sent once the contact's previous report is
        answered: an adapter's events of one call are ordered (a hang-up retried past an outage
        never overtakes the IVR selection before it)."""

        def answered(response: Any) -> None:
            try:
                if then is not None:
                    then(response)
            finally:
                self._next_report(contact)

        def refused(error: grpc.RpcError) -> bool | None:
            try:
                return failed(error) if failed is not None else None
            finally:
                self._next_report(contact)

        contact.reports.append(
            lambda: self.call(method, request, then=answered, failed=refused, retriable=retriable)
        )
        if len(contact.reports) == 1:
            contact.reports[0]()

    def _next_report(self, contact: Contact) -> None:
        contact.reports.popleft()
        if contact.reports:
            contact.reports[0]()

    def _send(
        self, method: Callable[..., Any], request: Any, retriable: tuple[grpc.StatusCode, ...] = RETRIABLE
    ) -> Any:
        """One call, sent again while the service says to come back later (and the run allows)."""
        give_up_at, pause = time.monotonic() + self.retry_for_s, 0.1
        while True:
            try:
                return method(request, timeout=10 if self.retry_for_s else 30)
            except grpc.RpcError as error:
                if error.code() not in retriable or time.monotonic() + pause > give_up_at:
                    raise
                with self._counting:
                    self.tally.retries[error.code().name] += 1
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _failed(
        self, error: grpc.RpcError, handler: Callable[[grpc.RpcError], bool | None] | None, what: str = ""
    ) -> None:
        # A handler that answers True expected the refusal (a desk trying again): not an error.
        if handler is not None and handler(error):
            self.tally.retries[error.code().name] += 1
            return
        self.tally.errors[error.code().name] += 1
        if self.tally.errors[error.code().name] <= 5:  # the first few of each code
            self.tally.error_details.append(f"{what}: {error.code().name}: {error.details()}")

    def request_id(self, what: str) -> str:
        return f"{self.run_id}/{what}/{next(self._requests)}"

    def setup(self) -> None:
        """Queues configured for the scenario, agents logged in, the offer channel open."""
        # A queue overflows only into one that exists: the targets first.
        for plan in sorted(self.scenario.queues, key=lambda plan: bool(plan.overflow_to)):
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
            self._send(
                self.desktops.Login,
                agents_pb.LoginRequest(
                    request_id=self.request_id("login"),
                    agent_id=agent_id,
                    display_name=f"Agent {plan.index}",
                    skills=[types_pb2.SkillLevel(skill=s, proficiency=p) for s, p in plan.skills],
                    ready=True,
                ),
            )
            agent.phase = "ready"
            agent.becomes("ready")
            agent.next_break_at = habits.next_break_in()
        self._started = time.monotonic()
        self._arrivals = callers(self.scenario)
        self._schedule_next_arrival()
        if self.backoffice is not None:
            self.backoffice.start()

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
        if s.service_level_s:
            config.service_level.threshold.CopyFrom(_seconds(s.service_level_s))
            config.service_level.percent = 80
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
        self._send(self.routing.UpsertQueue, request)

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
            if ending and (now >= end_by or not (self._open_contacts() or self._back_office_busy())):
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

    def _back_office_busy(self) -> bool:
        return self.backoffice is not None and self.backoffice.busy()

    def _open_contacts(self) -> list[Contact]:
        return [c for c in self.contacts.values() if c.outcome not in FINAL]

    def teardown(self, timeout_s: float = 30.0) -> None:
        """The day ends: callers still on the line hang up, agents log out, the channel closes."""
        if self.backoffice is not None:
            self.backoffice.stop()  # what it has sent is answered below; it starts nothing more
        for contact in self._open_contacts():
            if contact.phase in ("talking", "answering"):
                self._end(contact, END.CONTACT_END_REASON_AGENT, "answered")
                agent = self.agents.get(contact.visit.agent_id) if contact.visit else None
                if agent is not None and contact.visit is not None:
                    agent.wrapping = contact.visit
                    agent.becomes("wrap_up")
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
                    self._send(self.desktops.ForceState, logout)
                    agent.phase = "logged_out"
                    agent.becomes("logged_out")
                    if agent.wrapping is not None:  # logging out ends the after-contact work
                        agent.wrapping.wrapped_at = agent.timeline[-1][0]
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    still.append(agent)
            pending = still
            if pending:
                time.sleep(0.2)
        self.tally.errors.update({"not logged out": len(pending)} if pending else {})
        # What the service did just before a logout (a wrap-up timing out) may still be on its way
        # to the desk: read the push channel to its end before the desks' timelines are final.
        self._catch_up.set()
        if not self._caught_up.wait(timeout_s):
            self.tally.errors["push channel not read to its end"] += 1
        self._stop_listening.set()
        self._run_due(self.elapsed())
        self._pool.shutdown(wait=True)
        for channel in self._channels:
            channel.close()
        if self.backoffice is not None:
            self.backoffice.close()

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
            for agent in self.agents.values():
                out.write(json.dumps(agent.truth()) + "\n")
            for ticket in self.backoffice.truth() if self.backoffice is not None else ():
                out.write(json.dumps(ticket) + "\n")

    # Callers ------------------------------------------------------------------------------------

    def _schedule_next_arrival(self) -> None:
        caller = next(self._arrivals, None)
        if caller is not None:
            self.later(caller.at_s - self.elapsed(), lambda: self._arrive(caller))

    def _arrive(self, caller: Caller) -> None:
        self._schedule_next_arrival()
        self.tally.arrivals += 1
        self.tally.arrival_late_s.append(max(0.0, self.elapsed() - caller.at_s))
        contact = Contact(f"{self.run_id}-c{caller.index:06d}", caller, _now())
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
        asked = time.monotonic()
        self._report(
            contact,
            self.intake.StartContact,
            start,
            then=lambda _: self._ivr(contact),
            failed=self._refused(contact, asked),
            retriable=RETRIABLE_START,
        )

    def _refused(self, contact: Contact, asked: float) -> Callable[[grpc.RpcError], None]:
        def refused(_error: grpc.RpcError) -> None:
            contact.phase, contact.outcome, contact.ended_at = "ended", "refused", _now()
            self.tally.outcomes["refused"] += 1
            self.tally.refused_in_s.append(time.monotonic() - asked)

        return refused

    def _ivr(self, contact: Contact) -> None:
        contact.started = True
        caller = contact.caller
        if caller.self_service:
            selection = intake_pb.RecordIvrSelectionRequest(
                request_id=self.request_id("ivr"),
                contact_id=contact.contact_id,
                menu="main",
                selection="9",
                self_service_completed=True,
            )
            self._report(
                contact,
                self.intake.RecordIvrSelection,
                selection,
                then=lambda _: self._end(contact, END.CONTACT_END_REASON_SELF_SERVICE, "self_service"),
            )
            return
        selection = intake_pb.RecordIvrSelectionRequest(
            request_id=self.request_id("ivr"),
            contact_id=contact.contact_id,
            menu="main",
            selection=str(1 + [q.queue_id for q in self.scenario.queues].index(caller.queue_id)),
            queue_id=caller.queue_id,
        )
        contact.queue(Visit(caller.queue_id, _now()))
        self._report(contact, self.intake.RecordIvrSelection, selection)
        self.later(caller.patience_s, lambda: self._patience_runs_out(contact))

    def _patience_runs_out(self, contact: Contact) -> None:
        if contact.phase not in ("queued", "ringing") or contact.outcome:
            return
        if contact.caller.wants_callback:
            contact.phase = "callback"
            if contact.visit is not None:
                contact.visit.callback = True
            request = intake_pb.RequestCallbackRequest(
                request_id=self.request_id("callback"), contact_id=contact.contact_id
            )
            self._report(contact, self.intake.RequestCallback, request)
            return
        self._end(contact, END.CONTACT_END_REASON_CALLER, "abandoned")

    def _end(self, contact: Contact, reason: int, outcome: str) -> None:
        contact.phase, contact.outcome, contact.ended_at = "ended", outcome, _now()
        self.tally.outcomes[outcome] += 1
        if contact.visit is not None:
            contact.visit.close(outcome)
        self._stop_ringing(contact)
        request = intake_pb.EndContactRequest(
            request_id=self.request_id("end"), contact_id=contact.contact_id, reason=reason
        )
        # Telephony's moment: the report may reach intake late (queued behind the one before it,
        # or retried through an outage), and the contact's outcome is settled by when it ended.
        # (An intake older than the field, as a benchmark of an older tree runs, is not told.)
        if "ended_at" in request.DESCRIPTOR.fields_by_name:
            request.ended_at.FromDatetime(contact.ended_at)
        self._report(contact, self.intake.EndContact, request)

    # Agents -------------------------------------------------------------------------------------

    def _offered(self, agent_id: str, offer_id: str, contact_id: str) -> None:
        """The agents service reserved one of the run's agents for a contact: the desk rings."""
        agent = self.agents.get(agent_id)
        contact = self.contacts.get(contact_id)
        if agent is None or contact is None:
            return
        self.tally.offers += 1
        if contact.visit is not None:
            contact.visit.offers += 1
        if agent.phase == "break":
            agent.rang_before_break()
            return
        agent.phase, agent.ringing = "offered", offer_id
        agent.becomes("reserved")
        if contact.waiting:
            contact.ringing = agent_id
            contact.phase = "ringing" if contact.phase == "queued" else contact.phase
        reaction = agent.habits.reaction()
        if reaction == "miss":
            # The agent is away from the desk; the offer rings out and they come back a little later.
            self.later(self.scenario.ring_timeout_s, lambda: self._rings_out(agent, contact, offer_id))
            return
        self.later(agent.habits.answer_delay(), lambda: self._answer(agent, contact, offer_id, reaction))

    def _ring_stops(self, agent: Agent, contact: Contact) -> None:
        agent.ringing = ""
        if contact.ringing == agent.agent_id:
            contact.ringing = ""
            if contact.phase == "ringing":
                contact.phase = "queued"

    def _stop_ringing(self, contact: Contact) -> None:
        """The caller hung up while a desk rang for them: the ring stops and the agent is free again."""
        agent = self.agents.get(contact.ringing)
        if agent is not None and agent.ringing:
            self._ring_ended(agent, contact, agent.ringing, "contact_ended")

    def _ring_ended(self, agent: Agent, contact: Contact, offer_id: str, outcome: str = "") -> None:
        """The offer stopped ringing at the desk (with its outcome, when the desk knows it)."""
        if agent.ringing != offer_id:
            return
        if outcome:
            agent.offers[outcome] += 1
        self._ring_stops(agent, contact)
        self._ready(agent)

    def _rings_out(self, agent: Agent, contact: Contact, offer_id: str) -> None:
        if agent.ringing != offer_id:
            return
        agent.offers["timed_out"] += 1
        self._ring_stops(agent, contact)
        agent.phase = "missed"
        agent.becomes("not_ready", "missed_offer")
        self.later(1.5, lambda: self._back_after_missing(agent))

    def _answer(self, agent: Agent, contact: Contact, offer_id: str, reaction: str) -> None:
        if agent.ringing != offer_id:
            return  # the ring stopped before the agent picked up
        if reaction == "reject":
            request = agents_pb.RejectOfferRequest(
                request_id=self.request_id("reject"),
                agent_id=agent.agent_id,
                offer_id=offer_id,
                reason="busy",
            )

            self.call(
                self.desktops.RejectOffer,
                request,
                then=lambda _: self._ring_ended(agent, contact, offer_id, "rejected"),
                failed=lambda _: self._ring_ended(agent, contact, offer_id),
            )
            return
        was = contact.phase
        contact.phase = "answering"
        accept = agents_pb.AcceptOfferRequest(
            request_id=self.request_id("accept"), agent_id=agent.agent_id, offer_id=offer_id
        )

        def refused(_: grpc.RpcError) -> None:
            # The offer ended first (the caller hung up): the agent is free again.
            if contact.phase == "answering":
                contact.phase = "queued" if was == "ringing" else was
            self._ring_ended(agent, contact, offer_id)

        self.call(
            self.desktops.AcceptOffer,
            accept,
            then=lambda _: self._connect(agent, contact, offer_id),
            failed=refused,
        )

    def _connect(self, agent: Agent, contact: Contact, offer_id: str) -> None:
        if agent.ringing == offer_id:
            agent.offers["accepted"] += 1
        self._ring_stops(agent, contact)
        visit = contact.visit
        assert visit is not None
        agent.phase = "talking"
        agent.becomes("on_contact")
        if contact.outcome:  # the caller hung up as the agent picked up: straight to after-call work
            self._wrap_up(agent, contact, visit)
            return
        contact.phase = "talking"
        if visit.answered_at is None:
            visit.answered_at, visit.agent_id = _now(), agent.agent_id
        answered = intake_pb.ReportAnsweredRequest(
            request_id=self.request_id("answered"), contact_id=contact.contact_id, agent_id=agent.agent_id
        )
        self._report(contact, self.intake.ReportAnswered, answered)
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
        self._report(
            contact,
            self.intake.ReportHold,
            hold,
            then=lambda _: self.later(
                contact.caller.handle_s / 4, lambda: self._report(contact, self.intake.ReportResume, resume)
            ),
        )

    def _talk_ends(self, agent: Agent, contact: Contact) -> None:
        visit = contact.visit
        assert visit is not None
        if contact.caller.transfer_to and not contact.transferred:
            visit.transferred = True
            visit.close("answered")
            contact.queue(Visit(contact.caller.transfer_to, _now()))
            transfer = intake_pb.ReportTransferRequest(
                request_id=self.request_id("transfer"),
                contact_id=contact.contact_id,
                to_queue_id=contact.caller.transfer_to,
            )
            self._report(contact, self.intake.ReportTransfer, transfer)
        else:
            reason = (
                END.CONTACT_END_REASON_CALLER
                if contact.caller.hangs_up_first
                else END.CONTACT_END_REASON_AGENT
            )
            self._end(contact, reason, "answered")
        self._wrap_up(agent, contact, visit)

    def _wrap_up(self, agent: Agent, contact: Contact, visit: Visit) -> None:
        agent.phase, agent.wrapping = "wrap_up", visit
        agent.becomes("wrap_up")
        # An agent who lets the wrap-up run out waits for the service's own timeout, which the
        # desk learns from the pushed state (the service's clock starts when it learns of the end).
        if not agent.habits.lets_wrap_up_time_out():
            self.later(
                contact.caller.wrap_up_s,
                lambda: self._complete_wrap_up(agent, contact.contact_id, visit, attempts=5),
            )

    def _wrap_up_ended(self, agent: Agent, visit: Visit) -> None:
        """The service ended the visit's wrap-up (completed or timed out): the desk is ready."""
        if agent.wrapping is visit:
            visit.wrapped_at = _now()
            self._ready(agent)

    def _complete_wrap_up(self, agent: Agent, contact_id: str, visit: Visit, attempts: int) -> None:
        # The wrap-up a desktop completes ends when the agents service accepts it.
        if agent.wrapping is not visit:
            return
        request = agents_pb.CompleteWrapUpRequest(
            request_id=self.request_id("wrap"),
            agent_id=agent.agent_id,
            contact_id=contact_id,
            disposition_code="resolved",
        )
        contact = self.contacts[contact_id]
        # With a back office, the agent records the caller's outcome and, on the contact's last
        # visit, asks for the ticket the caller needs (a transfer's first agent leaves it to the next).
        plan = contact.caller.ticket if self.backoffice is not None and visit is contact.visit else None
        if self.backoffice is not None:
            request.disposition_code = contact.caller.disposition
        if plan is not None:
            request.ticket.CopyFrom(
                agent_ev.TicketRequest(
                    ticket_type=plan.ticket_type,
                    priority=plan.priority,
                    summary=f"{contact.caller.disposition}: {plan.category}",
                    category=plan.category,
                )
            )

        def retry(error: grpc.RpcError) -> bool:
            # The end of the contact may not have reached the agents service yet; past the last
            # attempt the desk stays in wrap-up until the service's timeout ends it.
            if attempts > 1 and error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.later(0.3, lambda: self._complete_wrap_up(agent, contact_id, visit, attempts - 1))
                return True
            return False

        def wrapped(_: object) -> None:
            if plan is not None and self.backoffice is not None:
                self.backoffice.expect(agent.agent_id, contact_id, contact.caller.index, plan)
            self._wrap_up_ended(agent, visit)

        self.call(self.desktops.CompleteWrapUp, request, then=wrapped, failed=retry)

    def _back_after_missing(self, agent: Agent) -> None:
        if agent.phase != "missed":
            return
        request = agents_pb.SetReadyRequest(request_id=self.request_id("ready"), agent_id=agent.agent_id)
        self.call(
            self.desktops.SetReady,
            request,
            then=lambda _: self._ready(agent),
            failed=lambda _: self._ready(agent),
        )

    def _ready(self, agent: Agent) -> None:
        agent.phase, agent.wrapping = "ready", None
        agent.becomes("ready")
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

        def on_break(_: object) -> None:
            agent.becomes("not_ready", reason)
            self.later(length, back)

        def refused(_: grpc.RpcError) -> None:
            if agent.phase == "break":
                agent.phase = "ready"

        self.call(self.desktops.SetNotReady, request, then=on_break, failed=refused)

    # The desktops' push channel: the agents service rings them; routing moves their contacts -----

    def _listen(self) -> None:
        registry = EventRegistry.of(routing_ev, agent_ev)
        consumer = Consumer(
            consumer_config(
                self.endpoints.kafka, f"{self.run_id}-desktops", **{"enable.partition.eof": False}
            )
        )
        start = []
        for topic in ("routing.events.v1", "agents.events.v1"):
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            for p in partitions:
                _, end = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                start.append(TopicPartition(topic, p, end))
        consumer.assign(start)
        self._listening.set()
        prefix = f"{self.run_id}-"
        ends: list[TopicPartition] = []
        try:
            while not self._stop_listening.is_set():
                if self._catch_up.is_set() and not self._caught_up.is_set():
                    ends = ends or _ends(consumer, start)
                    if _read_to(consumer, start, ends):
                        self._caught_up.set()
                for message in consumer.consume(500, timeout=0.2):
                    if message.error() is not None or not (message.key() or b"").decode().startswith(prefix):
                        continue
                    try:
                        envelope = decode(message.value(), message.headers(), registry)
                    except PoisonEvent:
                        continue
                    self._inbox.put(lambda e=envelope: self._pushed(e))
        finally:
            consumer.close()

    def _pushed(self, envelope: Any) -> None:
        event = envelope.payload
        match envelope.event_type:
            case "AgentStateChanged" if event.new_state == agent_ev.AgentState.AGENT_STATE_RESERVED:
                self._offered(event.agent_id, event.offer_id, event.contact_id)
            case "AgentStateChanged" if event.new_state == agent_ev.AgentState.AGENT_STATE_READY:
                agent = self.agents.get(event.agent_id)
                if agent is not None and agent.phase == "wrap_up" and agent.wrapping is not None:
                    self._wrap_up_ended(agent, agent.wrapping)
                elif agent is not None and agent.phase == "logged_out" and agent.wrapping is not None:
                    agent.ended_wrap_up_before_logout(envelope.occurred_at)
            case "ContactOverflowed":
                contact = self.contacts.get(event.contact_id)
                if contact is not None and contact.visit is not None:
                    callback = contact.visit.callback
                    contact.visit.close("overflowed")
                    contact.visits.append(Visit(event.to_queue_id, _now(), callback=callback))
            case "ContactDisconnected" | "QueueJoinRefused":
                contact = self.contacts.get(event.contact_id)
                overflowing = (
                    envelope.event_type == "QueueJoinRefused"
                    and event.outcome == routing_ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW
                )
                if contact is not None and not overflowing and not contact.outcome:
                    contact.phase, contact.outcome, contact.ended_at = "ended", "disconnected", _now()
                    if contact.visit is not None:
                        contact.visit.close("disconnected")
                    self.tally.outcomes["disconnected"] += 1

    # For the wallboard ---------------------------------------------------------------------------

    def agent_phases(self) -> Counter[str]:
        return Counter(agent.phase for agent in self.agents.values())


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _now() -> datetime:
    return datetime.now(UTC)


def _ends(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    return [
        TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=10)[1])
        for tp in partitions
    ]


def _read_to(consumer: Consumer, start: list[TopicPartition], ends: list[TopicPartition]) -> bool:
    """Whether the consumer has read from ``start`` to ``ends`` (its position counts the transaction
    markers after the last message; a partition it has read nothing from is still at its start)."""
    at = consumer.position(start)
    return all(
        max(now.offset, was.offset) >= end.offset for now, was, end in zip(at, start, ends, strict=True)
    )
