"""What a simulated day holds, drawn from one seed: callers and what they will do, agents and their habits.

Everything random is drawn here, up front or from per-caller and per-agent generators seeded from the
scenario's seed, so two runs of one scenario ask the system the same questions in the same order and
their results can be compared. The day is compressed: ``day_s`` real seconds play 24 hours of the
hourly arrival profile, and every duration (handle time, patience, ring timeout) is in real seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

# A typical inbound line: quiet at night, a morning peak at 10-11, a smaller one after lunch.
OFFICE_DAY = (
    0.05, 0.03, 0.02, 0.02, 0.03, 0.08, 0.25, 0.55, 0.85, 1.00, 1.00, 0.90,
    0.75, 0.80, 0.90, 0.85, 0.70, 0.55, 0.40, 0.30, 0.22, 0.15, 0.10, 0.07,
)  # fmt: skip


@dataclass(frozen=True)
class QueuePlan:
    """A queue of the scenario: its share of the calls and the skill it needs."""

    queue_id: str
    skill: str
    share: float
    priority: int = 10
    overflow_to: str = ""


@dataclass(frozen=True)
class DispositionPlan:
    """An outcome an agent records at wrap-up: its share of the wrap-ups, and the share of those that
    ask for a ticket of this type in one of these catalogue categories."""

    code: str
    share: float
    ticket_share: float = 0.0
    ticket_type: str = "inquiry"
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackOffice:
    """The departments' and the center's habits with tickets, in real seconds (the SLA clocks run
    on working days, so none of these comes near a deadline)."""

    dispositions: tuple[DispositionPlan, ...] = (
        DispositionPlan("resolved", 0.6, 0.05, "inquiry", ("it.account_access", "transport.taxi")),
        DispositionPlan(
            "complaint",
            0.2,
            0.8,
            "complaint",
            ("environment.noise", "transport.road_damage", "market.consumer_complaint", "water.billing"),
        ),
        DispositionPlan(
            "service_request",
            0.2,
            0.7,
            "service_request",
            ("housing.repair", "water.outage", "billing.refund"),
        ),
    )
    poll_s: float = 1.0  # how often the center and each department look at their work lists
    dispatch_delay_s: tuple[float, float] = (0.5, 2.0)
    accept_delay_s: tuple[float, float] = (0.5, 3.0)
    work_s: tuple[float, float] = (2.0, 6.0)
    review_delay_s: tuple[float, float] = (0.5, 2.0)
    follow_up_delay_s: tuple[float, float] = (1.0, 4.0)
    return_share: float = 0.12  # of first dispatches: "not ours", re-dispatched by the center
    extension_share: float = 0.2
    unresolved_share: float = 0.1  # completions that could not solve the issue
    satisfaction: tuple[tuple[str, float], ...] = (
        ("satisfied", 0.6),
        ("basically_satisfied", 0.25),
        ("dissatisfied", 0.15),
    )
    at_fault_share: float = 0.5  # of the dissatisfied: the department redoes its part (once)
    # Approvals (played when the simulator is given the approvals service): the share of tickets
    # whose remedy needs sign-off once their dispatches are done, its kind and amount (in minor
    # units, one of these ranges chosen evenly: the policy's small, medium and large refunds), and
    # the approvers' habits: a decision after a delay, a share of rejections and, once per step, of
    # requests for more information, which the center answers after a delay.
    approval_share: float = 0.0
    approval_kinds: tuple[str, ...] = ("refund", "compensation")
    approval_amounts: tuple[tuple[str, int, int], ...] = (
        ("small", 5_000, 100_000),
        ("medium", 100_001, 1_000_000),
        ("large", 1_000_001, 5_000_000),
    )
    decide_delay_s: tuple[float, float] = (0.5, 3.0)
    approval_reject_share: float = 0.15  # of each step's decisions
    info_request_share: float = 0.2  # of steps: the approver asks a question first
    info_answer_delay_s: tuple[float, float] = (0.5, 2.0)


@dataclass(frozen=True)
class Scenario:
    seed: int = 7
    duration_s: float = 180.0
    day_s: float = 240.0
    # Arrivals per second at the profile's peak hour (1.0 in the profile).
    peak_arrivals_per_s: float = 2.0
    profile: tuple[float, ...] = OFFICE_DAY
    start_hour: float = 8.0
    queues: tuple[QueuePlan, ...] = (
        QueuePlan("billing", "billing", 0.5, priority=10, overflow_to="general"),
        QueuePlan("sales", "sales", 0.3, priority=20),
        QueuePlan("general", "general", 0.2, priority=5),
    )
    agents: int = 24
    # Callers come from a customer base of this size, so some call again (0: every caller is new).
    customers: int = 0
    # Talk time: log-normal with this median and shape (with handle_exponential, exponential with
    # handle_median_s as its mean, as in an M/M/c queue); after-contact work log-normal too.
    handle_median_s: float = 10.0
    handle_sigma: float = 0.5
    handle_exponential: bool = False
    wrap_up_median_s: float = 2.0
    # Caller patience: exponential with this mean (math.inf: callers never hang up while waiting);
    # a share of the impatient ask for a callback.
    patience_mean_s: float = 30.0
    callback_share: float = 0.2
    self_service_share: float = 0.1
    vip_share: float = 0.05
    transfer_share: float = 0.03
    hold_share: float = 0.1
    # Agents: how fast they pick up, how often they miss or reject an offer, their breaks.
    answer_delay_s: tuple[float, float] = (0.3, 1.5)
    miss_share: float = 0.02
    reject_share: float = 0.02
    wrap_up_timeout_share: float = 0.1
    break_every_s: float = 90.0  # mean time between breaks (math.inf: no breaks)
    break_length_s: float = 12.0
    break_reasons: tuple[tuple[str, float], ...] = (
        ("break", 0.6),
        ("lunch", 0.1),
        ("training", 0.1),
        ("meeting", 0.2),
    )
    # The queues' rules for the day, in real seconds.
    ring_timeout_s: float = 6.0
    reject_delay_s: float = 5.0
    wrap_up_time_s: float = 8.0
    max_wait_s: float = 60.0
    short_abandon_s: float = 3.0
    service_level_s: float = 0.0  # T of each queue's service level (0: the KPIs' default)
    skills_per_agent: tuple[int, int] = (1, 2)
    # Tickets from wrap-ups and their way through the departments (played when the simulator is
    # given the tickets service).
    back_office: BackOffice = BackOffice()

    def rate_at(self, t: float) -> float:
        """Arrivals per second at ``t`` seconds into the run (the profile, linear between hours)."""
        hour = (self.start_hour + 24.0 * t / self.day_s) % 24.0
        lower = int(hour)
        weight = hour - lower
        level = (1 - weight) * self.profile[lower] + weight * self.profile[(lower + 1) % 24]
        return self.peak_arrivals_per_s * level

    def expected_arrivals(self, steps: int = 1_000) -> float:
        width = self.duration_s / steps
        return sum(self.rate_at((n + 0.5) * width) * width for n in range(steps))


@dataclass(frozen=True)
class Caller:
    """One contact and everything its caller will do, decided before it happens."""

    index: int
    at_s: float
    queue_id: str
    number: str
    patience_s: float
    handle_s: float
    wrap_up_s: float
    vip: bool
    self_service: bool
    wants_callback: bool
    transfer_to: str
    hold: bool
    hangs_up_first: bool
    disposition: str = "resolved"
    ticket: TicketPlan | None = None


@dataclass(frozen=True)
class TicketPlan:
    """The ticket an agent asks for at wrap-up."""

    ticket_type: str
    category: str
    priority: int


@dataclass(frozen=True)
class ApprovalPlan:
    """The sign-off a ticket's remedy needs: its kind, its amount in minor units (CNY) and the
    policy's range the amount falls in (small, medium, large)."""

    kind: str
    amount_minor: int
    size: str


def approval_plan(scenario: Scenario, index: int) -> ApprovalPlan | None:
    """Whether the ticket of caller ``index`` asks for approval, and for what (its own generator,
    so a scenario without approvals draws the rest as before)."""
    habits = scenario.back_office
    rng = random.Random(f"{scenario.seed}/approval/{index}")
    if not habits.approval_kinds or rng.random() >= habits.approval_share:
        return None
    size, low, high = rng.choice(habits.approval_amounts)
    return ApprovalPlan(rng.choice(habits.approval_kinds), rng.randint(low, high), size)


@dataclass(frozen=True)
class AgentPlan:
    index: int
    skills: tuple[tuple[str, int], ...]
    seed: int


@dataclass
class Habits:
    """An agent's own random habits, from its own generator (so one agent's luck never shifts another's)."""

    scenario: Scenario
    rng: random.Random = field(default_factory=random.Random)

    def answer_delay(self) -> float:
        return self.rng.uniform(*self.scenario.answer_delay_s)

    def reaction(self) -> str:
        draw = self.rng.random()
        if draw < self.scenario.miss_share:
            return "miss"
        if draw < self.scenario.miss_share + self.scenario.reject_share:
            return "reject"
        return "accept"

    def lets_wrap_up_time_out(self) -> bool:
        return self.rng.random() < self.scenario.wrap_up_timeout_share

    def next_break_in(self) -> float:
        return self.rng.expovariate(1.0) * self.scenario.break_every_s

    def break_reason(self) -> str:
        reasons, weights = zip(*self.scenario.break_reasons, strict=True)
        return self.rng.choices(reasons, weights)[0]

    def break_length(self) -> float:
        return self.rng.uniform(0.5, 1.5) * self.scenario.break_length_s


def callers(scenario: Scenario) -> Iterator[Caller]:
    """The arrivals of the run: a Poisson process following the hourly profile (by thinning)."""
    arrivals = random.Random(f"{scenario.seed}/arrivals")
    peak = scenario.peak_arrivals_per_s * max(scenario.profile)
    t, index = 0.0, 0
    while True:
        t += arrivals.expovariate(peak)
        if t >= scenario.duration_s:
            return
        if arrivals.random() * peak > scenario.rate_at(t):
            continue
        yield _caller(scenario, index, t)
        index += 1


def _caller(scenario: Scenario, index: int, at_s: float) -> Caller:
    rng = random.Random(f"{scenario.seed}/caller/{index}")
    plans, shares = zip(*((q, q.share) for q in scenario.queues), strict=True)
    queue = rng.choices(plans, shares)[0]
    others = [q.queue_id for q in scenario.queues if q.queue_id != queue.queue_id]
    number = f"+4420{rng.randrange(10**7, 10**8)}"
    if scenario.customers:
        customer = random.Random(f"{scenario.seed}/customer/{index}").randrange(scenario.customers)
        number = f"+4421{customer:08d}"
    patience = rng.expovariate(1.0)
    handle = rng.lognormvariate(math.log(scenario.handle_median_s), scenario.handle_sigma)
    if scenario.handle_exponential:
        # its own generator, so the caller's other draws stay those of the log-normal scenario
        handle = random.Random(f"{scenario.seed}/handle/{index}").expovariate(1.0 / scenario.handle_median_s)
    wrap_up = rng.lognormvariate(0.0, 0.4)
    return Caller(
        index=index,
        at_s=at_s,
        queue_id=queue.queue_id,
        number=number,
        patience_s=math.inf if math.isinf(scenario.patience_mean_s) else patience * scenario.patience_mean_s,
        handle_s=handle,
        wrap_up_s=wrap_up * scenario.wrap_up_median_s,
        vip=rng.random() < scenario.vip_share,
        self_service=rng.random() < scenario.self_service_share,
        wants_callback=rng.random() < scenario.callback_share,
        transfer_to=rng.choice(others) if others and rng.random() < scenario.transfer_share else "",
        hold=rng.random() < scenario.hold_share,
        hangs_up_first=rng.random() < 0.5,
        **_wrap_up_outcome(scenario, index),
    )


def _wrap_up_outcome(scenario: Scenario, index: int) -> dict[str, object]:
    # Its own generator, so the caller's other draws stay those of a scenario without tickets.
    rng = random.Random(f"{scenario.seed}/disposition/{index}")
    plans = scenario.back_office.dispositions
    if not plans:
        return {}
    plan = rng.choices(plans, [p.share for p in plans])[0]
    if not plan.categories or rng.random() >= plan.ticket_share:
        return {"disposition": plan.code}
    ticket = TicketPlan(plan.ticket_type, rng.choice(plan.categories), rng.randint(2, 4))
    return {"disposition": plan.code, "ticket": ticket}


def agent_plans(scenario: Scenario) -> list[AgentPlan]:
    """The agents of the run: each has one to a few of the queues' skills, at proficiency 2 to 5."""
    rng = random.Random(f"{scenario.seed}/agents")
    skills = [q.skill for q in scenario.queues]
    plans = []
    for index in range(scenario.agents):
        # Spread the primary skill evenly, so every queue has agents whatever the seed.
        primary = skills[index % len(skills)]
        extra = rng.sample(skills, k=min(len(skills), rng.randint(*scenario.skills_per_agent)))
        held = {primary: rng.randint(3, 5)} | {s: rng.randint(2, 5) for s in extra if s != primary}
        plans.append(AgentPlan(index, tuple(sorted(held.items())), rng.randrange(2**32)))
    return plans


def steady(rate: float, seconds: float, agents: int, seed: int) -> Scenario:
    """Calls at a constant rate, enough agents that one is nearly always free, and no abandons,
    breaks, misses or transfers: a day that measures the system, not the queue."""
    return replace(
        Scenario(),
        seed=seed,
        duration_s=seconds,
        day_s=seconds,
        peak_arrivals_per_s=rate,
        profile=(1.0,) * 24,
        queues=(QueuePlan("bench-a", "billing", 0.5), QueuePlan("bench-b", "sales", 0.5)),
        agents=agents,
        skills_per_agent=(2, 2),
        handle_median_s=1.0,
        handle_sigma=0.3,
        wrap_up_median_s=0.2,
        patience_mean_s=1e9,
        callback_share=0.0,
        self_service_share=0.0,
        transfer_share=0.0,
        hold_share=0.0,
        miss_share=0.0,
        reject_share=0.0,
        wrap_up_timeout_share=0.0,
        answer_delay_s=(0.05, 0.1),
        break_every_s=1e9,
    )
