"""Approval requests' events for the KPI projection tests, written by the approvals context itself.

``ApprovalStory`` runs the approvals domain (``decide``, ``on_deadline``, ``evolve``) on the shipped
policy and keeps each event as the envelope its event store would write (versions from 1), so the
fold is tested on the events the service really writes. Times are hours after ``MONDAY`` (10:00 in
Beijing, a working morning of the policy's calendar).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from services.approvals import domain
from services.approvals.domain import APPROVE, DecideStep, ProvideInfo, Requester
from services.approvals.policies import DEFAULT_CALENDARS_DIR, DEFAULT_POLICY_DIR, load_policy
from services.kpi.approvals import REQUEST
from services.platform.calendars import load_calendars
from services.platform.envelope import Cause, Envelope, make_envelope
from services.platform.topics import department_codes
from tests.unit.kpi.events import REGISTRY

MONDAY = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
POLICY = load_policy(
    DEFAULT_POLICY_DIR / "approvals-v1.yaml", load_calendars(DEFAULT_CALENDARS_DIR), department_codes()
)
REQUESTER = Requester("agent-7")
LEAD = Requester("lead-1", titles=frozenset({"team_lead"}))
DUTY = Requester("duty-1", titles=frozenset({"duty_manager"}))
FINANCE = Requester("finance-1", "finance")
FINANCE_DIRECTOR = Requester("fin-dir", "finance", frozenset({"director"}))
LEGAL = Requester("legal-1", "legal")


def h(hours: float) -> datetime:
    return MONDAY + hours * HOUR


class ApprovalStory:
    """One request's life through the approvals domain; ``events`` its envelopes in its order."""

    def __init__(self, approval_id: str = "ap-1", ticket_id: str = "t-1") -> None:
        self.approval_id = approval_id
        self.ticket_id = ticket_id
        self.state = domain.ApprovalRequest()
        self.events: list[Envelope] = []

    def _apply(self, payloads: list[Message], at: datetime) -> list[Envelope]:
        written = []
        for payload in payloads:
            envelope = make_envelope(
                payload,
                registry=REGISTRY,
                aggregate_type=REQUEST,
                aggregate_id=self.approval_id,
                aggregate_version=len(self.events) + 1,
                occurred_at=at,
                cause=Cause.request(f"{self.approval_id}:{len(self.events) + 1}"),
            )
            self.state = domain.evolve(self.state, envelope)
            self.events.append(envelope)
            written.append(envelope)
        return written

    def _do(self, command: domain.Command) -> list[Envelope]:
        return self._apply(domain.decide(self.state, command, POLICY), command.now)

    def requested(self, amount_minor: int, kind: str = "refund", at: float = 0.0) -> list[Envelope]:
        """800 CNY (80_000): the team lead alone; 5,000: lead, finance; 20,000: lead, finance, legal."""
        return self._do(
            domain.RequestApproval(
                self.approval_id, self.ticket_id, kind, amount_minor, "CNY", "standard", "complaint",
                "goodwill", REQUESTER, h(at),
            )
        )  # fmt: skip

    def decided(self, who: Requester, decision: int = APPROVE, at: float = 0.0) -> list[Envelope]:
        step = self.state.open_step
        assert step is not None
        return self._do(DecideStep(step.index, decision, "ok", who, h(at)))

    def info_provided(self, at: float) -> list[Envelope]:
        return self._do(ProvideInfo("order 1234", REQUESTER, h(at)))

    def withdrawn(self, at: float) -> list[Envelope]:
        return self._do(domain.Withdraw("no longer needed", REQUESTER, h(at)))

    def fired(self, until: float) -> list[Envelope]:
        """Every deadline due by ``until``, in order, fired when due as the scheduler does."""
        fired: list[Envelope] = []
        while True:
            due = sorted(
                (d for d in domain.deadlines(self.state) if d.due_at <= h(until)), key=lambda d: d.due_at
            )
            if not due:
                return fired
            fired += self._apply(domain.on_deadline(self.state, due[0], due[0].due_at, POLICY), due[0].due_at)

    @property
    def open_deadline(self) -> datetime:
        step = self.state.open_step
        assert step is not None and step.deadline_at is not None
        return step.deadline_at
