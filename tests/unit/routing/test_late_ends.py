"""An end recorded late (telephony's time on it) and routing's own timers settle the same outcome
whatever routing hears first.

Through a broker outage routing's maximum wait comes due while intake cannot record the caller's
hang-up; afterwards either may reach the log first. Here a hypothesis-drawn world says when the
caller hung up, when intake recorded it and when the center stood still (nothing read, no timer
fired), and a drawn schedule the order in which it then reads. The overflow happens when routing
fires the timer (the first moment it runs after the maximum wait): the first visit ends abandoned
when the caller left before that, overflowed otherwise (and the spill visit abandoned); no visit the
overflow opened outlives a caller who had gone, and no agent keeps a ring.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as intake_ev
from callcenter.routing.v1 import events_pb2 as ev
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.center import Center, build_center
from tests.unit.routing.test_interleavings import Schedule

CONTACTS, ROUTING = "contacts.events.v1", "routing.events.v1"
VOICE = types_pb2.Channel.CHANNEL_VOICE
CALLER = intake_ev.ContactEndReason.CONTACT_END_REASON_CALLER
MAX_WAIT_S = 60
ENDS = {
    "ContactConnected": "answered",
    "ContactAbandoned": "abandoned",
    "ContactOverflowed": "overflowed",
    "ContactDisconnected": "disconnected",
}


@dataclass(frozen=True)
class World:
    hangs_up_s: int
    recorded_after_s: int
    agent_in_spill: bool
    # The center stands still from pause_from_s for pause_s seconds, then catches up.
    pause_from_s: int
    pause_s: int

    def stands_still(self, second: int) -> bool:
        return self.pause_from_s <= second < self.pause_from_s + self.pause_s

    @property
    def overflows_at_s(self) -> int:
        """When routing overflows the contact: the first second it runs once the maximum wait, from the
        moment it queued the contact, is due."""
        return self._runs_from(self._runs_from(1) + MAX_WAIT_S)

    def _runs_from(self, second: int) -> int:
        """The first second from ``second`` on in which the center runs (it queues, fires, reads)."""
        return next(s for s in range(second, 400) if not self.stands_still(s))

    @property
    def left_before_the_overflow(self) -> bool:
        return self.hangs_up_s < self.overflows_at_s


worlds = st.builds(
    World,
    hangs_up_s=st.integers(1, MAX_WAIT_S + 60),
    recorded_after_s=st.integers(0, 90),
    agent_in_spill=st.booleans(),
    pause_from_s=st.integers(0, 120),
    pause_s=st.integers(0, 60),
)


def _open(center: Center, world: World) -> None:
    billing = ev.QueueConfig(
        queue_id="billing",
        required_skills=[types_pb2.SkillLevel(skill="billing", proficiency=3)],
        fallback=ev.FallbackOutcome.FALLBACK_OUTCOME_OVERFLOW,
        fallback_queue_id="spill",
        ring_timeout={"seconds": 20},
    )
    billing.max_wait.FromSeconds(MAX_WAIT_S)
    spill = ev.QueueConfig(
        queue_id="spill",
        required_skills=[types_pb2.SkillLevel(skill="spill", proficiency=3)],
        ring_timeout={"seconds": 20},
    )
    center.upsert_queue(spill)
    center.upsert_queue(billing)
    if world.agent_in_spill:
        center.login("a-1", {"spill": 4})


def visit_outcomes(center: Center, contact_id: str) -> dict[int, str]:
    """Each visit's outcome as routing's log says, its corrections applied."""
    outcomes: dict[int, str] = defaultdict(str)
    visit = 0
    for envelope in center.events(ROUTING):
        if envelope.aggregate_id != contact_id:
            continue
        event = envelope.payload
        if envelope.event_type == "ContactQueued":
            visit = event.visit
        elif envelope.event_type in ENDS:
            outcomes[visit] = outcomes[visit] or ENDS[envelope.event_type]
        elif envelope.event_type == "ConnectionVoided":
            outcomes[visit] = "abandoned"
        elif envelope.event_type == "OverflowVoided":
            outcomes[event.visit] = "abandoned"
            for later in range(event.visit + 1, event.last_visit + 1):
                outcomes.pop(later, None)
    return dict(outcomes)


def play(world: World, schedule: Schedule) -> tuple[dict[int, str], Center]:
    center = build_center(choose=schedule.partition)
    _open(center, world)
    start = center.clock.now
    center.write(
        CONTACTS,
        "Contact",
        "c-1",
        intake_ev.RoutingRequested(contact_id="c-1", queue_id="billing", channel=VOICE),
    )
    recorded_at = world.hangs_up_s + world.recorded_after_s
    for second in range(1, 260):
        center.clock.now = start + timedelta(seconds=second)
        if second == recorded_at:
            ended = intake_ev.ContactEnded(contact_id="c-1", reason=CALLER)
            # Half a second into its second: never the very moment of the overflow.
            ended.ended_at.FromDatetime(start + timedelta(seconds=world.hangs_up_s + 0.5))
            center.write(CONTACTS, "Contact", "c-1", ended)
        if not world.stands_still(second):
            schedule.settle(center)
    return visit_outcomes(center, "c-1"), center


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds, data=st.data())
def test_whichever_routing_hears_first_the_visit_ends_as_the_caller_left(world: World, data) -> None:
    outcomes, center = play(world, Schedule(data))
    try:
        if world.left_before_the_overflow:
            assert outcomes == {1: "abandoned"}
        else:
            assert outcomes == {1: "overflowed", 2: "abandoned"}
        if world.agent_in_spill:
            assert center.agent("a-1").offer is None, center.agent("a-1").describe()
    finally:
        center.close()
