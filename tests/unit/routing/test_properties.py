"""Random days in a small center: whatever callers, agents and the clock do, the invariants hold.

An agent holds at most one voice contact and one offer; no contact is offered to an agent who
cannot take it (logged out, busy, already offered); each visit of a queued contact ends once,
answered, abandoned, overflowed, disconnected or called back; and once every caller has hung up
and time has passed, nothing is left waiting.
"""

from __future__ import annotations

from collections import Counter
from contextlib import suppress

from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as ev
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.agents import domain as agents_domain
from services.agents.handlers import EVENTS_TOPIC as AGENTS_TOPIC
from services.platform.errors import DomainError
from services.routing import handlers as routing
from services.routing.domain import Status
from tests.support.center import build_center

S = agents_domain.State
VOICE = types_pb2.Channel.CHANNEL_VOICE
AGENTS = ["a-1", "a-2", "a-3"]
QUEUES = ["billing", "sales"]
VISIT_ENDS = (
    "ContactConnected",
    "ContactAbandoned",
    "ContactOverflowed",
    "ContactDisconnected",
    "CallbackCancelled",
)


def _queue(queue_id: str, skill: str, **fields) -> ev.QueueConfig:
    steps = fields.pop("steps", [])
    config = ev.QueueConfig(
        queue_id=queue_id, required_skills=[types_pb2.SkillLevel(skill=skill, proficiency=3)], **fields
    )
    for after, extra in steps:
        step = config.escalation_steps.add(**extra)
        step.after.FromSeconds(after)
    return config


class ADayInTheCenter(RuleBasedStateMachine):
    @initialize()
    def open_the_center(self) -> None:
        self.center = build_center()
        self.center.upsert_queue(_queue("sales", "sales", steps=[(30, {"min_proficiency": 1})]))
        self.center.upsert_queue(
            _queue(
                "billing",
                "billing",
                priority=20,
                max_wait={"seconds": 120},
                fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW,
                fallback_queue_id="sales",
                reject_delay={"seconds": 10},
                wrap_up_time={"seconds": 30},
                wrap_up_mode=ev.WrapUpMode.WRAP_UP_MODE_MANDATORY_WITH_TIMEOUT,
            )
        )
        self.contacts: list[str] = []
        self.hung_up: set[str] = set()

    def _try(self, command: agents_domain.Command) -> None:
        # A desktop sending what the agent's state forbids is refused, and nothing changes.
        with suppress(DomainError):
            self.center.agent_does(command)

    @rule(queue=st.sampled_from(QUEUES), vip=st.booleans())
    def a_customer_calls(self, queue: str, vip: bool) -> None:
        contact_id = f"c-{len(self.contacts)}"
        self.contacts.append(contact_id)
        request = intake_ev.RoutingRequested(contact_id=contact_id, queue_id=queue, channel=VOICE, vip=vip)
        self.center.publish("contacts.events.v1", "Contact", contact_id, request)

    @rule(agent=st.sampled_from(AGENTS), billing=st.integers(1, 5), sales=st.integers(0, 5))
    def an_agent_logs_in(self, agent: str, billing: int, sales: int) -> None:
        skills = {"billing": billing, **({"sales": sales} if sales else {})}
        self._try(agents_domain.Login(agent, agent, list(skills.items()), [], 0, True, self.center.clock.now))

    @rule(agent=st.sampled_from(AGENTS))
    def an_agent_gets_ready(self, agent: str) -> None:
        self._try(agents_domain.SetReady(agent, self.center.clock.now))

    @rule(agent=st.sampled_from(AGENTS), reason=st.sampled_from([1, 2, 3]))
    def an_agent_takes_a_break(self, agent: str, reason: int) -> None:
        self._try(agents_domain.SetNotReady(agent, reason, self.center.clock.now))

    @rule(agent=st.sampled_from(AGENTS))
    def an_agent_logs_out(self, agent: str) -> None:
        self._try(agents_domain.Logout(agent, self.center.clock.now))

    @rule(agent=st.sampled_from(AGENTS), accept=st.booleans())
    def an_agent_answers_an_offer(self, agent: str, accept: bool) -> None:
        try:
            offer = self.center.agent(agent).offer
        except DomainError:
            return
        if offer is None:
            return
        if accept:
            self._try(agents_domain.AcceptOffer(agent, offer.offer_id, self.center.clock.now))
        else:
            self._try(agents_domain.RejectOffer(agent, offer.offer_id, self.center.clock.now, "no"))

    @rule(agent=st.sampled_from(AGENTS))
    def an_agent_completes_wrap_up(self, agent: str) -> None:
        try:
            wrap = self.center.agent(agent).wrap_up
        except DomainError:
            return
        if wrap is not None:
            self._try(agents_domain.CompleteWrapUp(agent, wrap.contact_id, "done", self.center.clock.now))

    @precondition(lambda self: len(self.hung_up) < len(self.contacts))
    @rule(data=st.data())
    def a_caller_hangs_up(self, data: st.DataObject) -> None:
        contact_id = data.draw(st.sampled_from([c for c in self.contacts if c not in self.hung_up]))
        self._hang_up(contact_id)

    @precondition(lambda self: len(self.hung_up) < len(self.contacts))
    @rule(data=st.data())
    def a_caller_asks_for_a_callback(self, data: st.DataObject) -> None:
        contact_id = data.draw(st.sampled_from([c for c in self.contacts if c not in self.hung_up]))
        if self.center.entry(contact_id).status == Status.WAITING:
            request = intake_ev.CallbackRequested(contact_id=contact_id)
            self.center.publish("contacts.events.v1", "Contact", contact_id, request)

    @rule(seconds=st.integers(1, 90))
    def time_passes(self, seconds: int) -> None:
        self.center.advance(seconds)

    def _hang_up(self, contact_id: str) -> None:
        self.hung_up.add(contact_id)
        holder = self.center.agents.contacts.agent_of(contact_id) or ""
        ended = intake_ev.ContactEnded(
            contact_id=contact_id,
            reason=intake_ev.ContactEndReason.CONTACT_END_REASON_CALLER,
            agent_id=holder,
        )
        self.center.publish("contacts.events.v1", "Contact", contact_id, ended)

    @invariant()
    def an_agent_holds_at_most_one_voice_contact_and_one_offer(self) -> None:
        for agent in self.center.agents.list():
            assert len(agent.contacts) <= 1, agent.describe()
            if agent.offer is not None:
                assert not agent.contacts, agent.describe()

    @invariant()
    def no_contact_is_offered_to_an_agent_who_cannot_take_it(self) -> None:
        # Every reaction has settled before the next action, so routing's view of the agents is
        # current: a refused reservation would mean routing offered a logged-out, busy or offered agent.
        assert self.center.payloads(AGENTS_TOPIC, "ReservationRefused") == []
        for agent in self.center.agents.list():
            if not agent.logged_in:
                assert agent.offer is None and not agent.contacts

    @invariant()
    def each_visit_ends_at_most_once_and_an_agent_has_what_routing_offered(self) -> None:
        ends = Counter(
            (e.aggregate_id, self._visit_of(e))
            for e in self.center.events(routing.EVENTS_TOPIC)
            if e.event_type in VISIT_ENDS
        )
        assert all(count == 1 for count in ends.values()), ends
        for agent in self.center.agents.list():
            if agent.offer is not None:
                entry = self.center.entry(agent.offer.contact_id)
                assert entry.offer is not None and entry.offer.agent_id == agent.agent_id

    def _visit_of(self, envelope) -> int:
        visits = [
            e.payload.visit
            for e in self.center.events(routing.EVENTS_TOPIC)
            if e.event_type == "ContactQueued"
            and e.aggregate_id == envelope.aggregate_id
            and e.aggregate_version < envelope.aggregate_version
        ]
        return visits[-1] if visits else 0

    def teardown(self) -> None:
        if not hasattr(self, "center"):
            return
        for contact_id in self.contacts:
            if contact_id not in self.hung_up:
                self._hang_up(contact_id)
        self.center.advance(600)
        for contact_id in self.contacts:
            entry = self.center.entry(contact_id)
            assert entry.status in (Status.CONNECTED, Status.LEFT), entry.describe()
            assert entry.offer is None, entry.describe()
        queued = Counter(
            e.aggregate_id
            for e in self.center.events(routing.EVENTS_TOPIC)
            if e.event_type == "ContactQueued"
        )
        ended = Counter(
            e.aggregate_id for e in self.center.events(routing.EVENTS_TOPIC) if e.event_type in VISIT_ENDS
        )
        for contact_id, visits in queued.items():
            assert ended[contact_id] == visits, f"{contact_id}: {visits} visits, {ended[contact_id]} ends"


ADayInTheCenter.TestCase.settings = settings(
    max_examples=100, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_a_day_in_the_center = ADayInTheCenter.TestCase
