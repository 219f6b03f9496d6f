"""Any interleaving of intake's, routing's and agents' streams records the same outcome of a call.

Routing reads intake's topic and the agents' topic; the agents service reads intake's and routing's.
Each reads a topic's partition in order, but the topics in whatever order they come (a context that
lags behind, or one that hurries, meets them differently). Here a hypothesis-drawn schedule picks,
step by step, which consumer reads next and from which partition, and how far each lags behind the
world's actions: a desk that accepts, rejects or lets an offer ring, a caller who hangs up before or
after. Whatever the schedule, the visit's outcome is what happened in the world: answered by the
agent when it accepted before the caller hung up, abandoned otherwise; and the agent is left free.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as ev
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.agents import domain as agents_domain
from services.platform.errors import DomainError
from services.routing.domain import Status
from tests.support.center import Center, build_center
from tests.support.requests import request

CONTACTS = "contacts.events.v1"
VOICE = types_pb2.Channel.CHANNEL_VOICE
END = intake_ev.ContactEndReason
MAX_STEPS = 400


@dataclass(frozen=True)
class World:
    """What the people did: when the caller hung up (as soon as routing chose an agent, before the desk
    rang; while it rang, before the desk answered; or after), and the desk's answer to the ring."""

    hangs_up: str
    desk: str
    lags: tuple[int, int]

    @property
    def answered(self) -> bool:
        return self.desk == "accept" and self.hangs_up == "after"


worlds = st.builds(
    World,
    hangs_up=st.sampled_from(["before_ring", "while_ringing", "after"]),
    desk=st.sampled_from(["accept", "reject", "ignore"]),
    lags=st.tuples(st.integers(0, 12), st.integers(0, 12)),
)


class Schedule:
    """The order of reading, drawn step by step: which consumer reads next, from which partition."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def partition(self, ready: list[tuple[str, int]]) -> tuple[str, int]:
        return self._data.draw(st.sampled_from(ready), label="partition")

    def step(self, center: Center) -> bool:
        """One consumer reads one record (or a due timer fires); False when nothing was left to do."""
        fired = sum(scheduler.fire_due() for scheduler in center.schedulers)
        runners = list(center.runners)
        first = self._data.draw(st.integers(0, len(runners) - 1), label="consumer")
        for runner in runners[first:] + runners[:first]:
            if runner.run_once():
                return True
        return bool(fired)

    def steps(self, center: Center, count: int) -> None:
        for _ in range(count):
            if not self.step(center):
                return

    def until(self, center: Center, holds) -> None:
        for _ in range(MAX_STEPS):
            if holds() or not self.step(center):
                return

    def settle(self, center: Center) -> None:
        for _ in range(MAX_STEPS):
            if not self.step(center):
                return
        raise AssertionError("the center did not settle")


def _open(center: Center) -> None:
    config = ev.QueueConfig(
        queue_id="billing",
        required_skills=[types_pb2.SkillLevel(skill="billing", proficiency=3)],
        ring_timeout={"seconds": 30},
    )
    center.upsert_queue(config)
    center.login("a-1")


def play(world: World, schedule: Schedule) -> tuple[str, str, int]:
    """The world's actions against a center reading as ``schedule`` says; returns the visit's outcome,
    the agent it connected, and the agent's state at the end."""
    center = build_center(choose=schedule.partition)
    try:
        return _play(center, world, schedule)
    finally:
        center.close()


def _play(center: Center, world: World, schedule: Schedule) -> tuple[str, str, int]:
    _open(center)
    routing_requested = intake_ev.RoutingRequested(contact_id="c-1", queue_id="billing", channel=VOICE)
    center.write(CONTACTS, "Contact", "c-1", routing_requested)
    hung_up = ended = intake_ev.ContactEnded(contact_id="c-1", reason=END.CONTACT_END_REASON_CALLER)
    if world.hangs_up == "before_ring":
        schedule.until(center, lambda: center.entry("c-1").offer is not None)
        center.clock.now += timedelta(seconds=1)
        center.write(CONTACTS, "Contact", "c-1", hung_up)
    schedule.until(center, lambda: center.agent("a-1").offer is not None)
    offer = center.agent("a-1").offer

    center.clock.now += timedelta(seconds=5)
    if world.hangs_up == "while_ringing":
        center.write(CONTACTS, "Contact", "c-1", hung_up)
        schedule.steps(center, world.lags[0])
    center.clock.now += timedelta(seconds=1)
    accepted = offer is not None and _desk(center, world.desk, offer.offer_id)
    if accepted and world.hangs_up == "after":
        answered = intake_ev.ContactAnswered(contact_id="c-1", agent_id="a-1", queue_id="billing")
        center.write(CONTACTS, "Contact", "c-1", answered)
    schedule.steps(center, world.lags[1])
    if world.hangs_up == "after":
        center.clock.now += timedelta(seconds=14)
        reason = END.CONTACT_END_REASON_AGENT if accepted else END.CONTACT_END_REASON_CALLER
        ended = intake_ev.ContactEnded(contact_id="c-1", reason=reason, agent_id="a-1" if accepted else "")
        center.write(CONTACTS, "Contact", "c-1", ended)
    schedule.settle(center)
    center.clock.now += timedelta(minutes=2)
    schedule.settle(center)

    entry = center.entry("c-1")
    agent = center.agent("a-1")
    assert agent.offer is None and not agent.contacts, agent.describe()
    connected = entry.last_agent_id if entry.status == Status.CONNECTED else ""
    return entry.outcome, connected, agent.state


def _desk(center: Center, action: str, offer_id: str) -> bool:
    """The desk's answer to the ring; True when the agents service took an accept."""
    now = center.clock.now
    command = {
        "accept": agents_domain.AcceptOffer("a-1", offer_id, now),
        "reject": agents_domain.RejectOffer("a-1", offer_id, now, "busy"),
    }.get(action)
    if command is None:
        return False
    with suppress(DomainError):  # the offer may be gone already: the agents service heard the end
        center.agents.execute(request(f"desk-{action}", action), command)
        return action == "accept"
    return False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds, data=st.data())
def test_whatever_order_the_streams_are_read_in_the_visit_ends_as_it_did_in_the_world(
    world: World, data: st.DataObject
) -> None:
    outcome, connected, state = play(world, Schedule(data))

    if world.answered:
        assert (outcome, connected) == ("answered", "a-1")
    else:
        assert (outcome, connected) == ("abandoned", "")
    # No ring outlived its caller: the agent never went not ready for an offer that rang out.
    assert state in (agents_domain.State.AGENT_STATE_READY, agents_domain.State.AGENT_STATE_WRAP_UP)
