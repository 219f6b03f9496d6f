"""The approvals service layer: requests, decisions, answers and withdrawals; policy versions and
delegations; the reaction to tickets asking for sign-off; deadlines; dry runs of a new policy version.

Every command goes through the kernel's write path (``EventStore.execute``), once per request id,
decided against the newest state. A request keeps the policy version it started with: its decisions
and deadlines are decided by that version, whatever is active since. A policy version becomes active
by an event (``PolicyVersionActivated``, on the policy's own aggregate); at the first start the lowest
version loaded is activated so that the choice is on the record, never implied by the files.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from callcenter.approvals.v1 import events_pb2 as approval_events
from callcenter.tickets.v1 import events_pb2 as ticket_events
from google.protobuf.message import Message

from services.approvals import domain
from services.approvals.domain import ApprovalRequest, Delegation, Requester
from services.approvals.policies import ApprovalPolicy
from services.platform.codec import dataclass_codec
from services.platform.consumer import TransientError
from services.platform.envelope import Cause, Envelope, EventRegistry
from services.platform.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.platform.eventstore import AggregateKind, Deadline, EventStore, Loaded, Transaction
from services.platform.requests import Request
from services.platform.timestamps import dt

log = logging.getLogger(__name__)

KIND = domain.KIND
POLICY = "ApprovalPolicy"
DELEGATIONS = "Delegations"
EVENTS_TOPIC = "approvals.events.v1"
SNAPSHOTS_TOPIC = "approvals.snapshots.v1"
REACTS_TO = ("tickets.events.v1",)
# The namespace of approval ids derived from request ids: never change it, or a retried request
# would name a second approval.
APPROVAL_IDS = uuid.UUID("5e1c9a74-2b8d-4f03-a6e7-91d4c3b0f258")
# What a ticket type is called in policies (the tickets' enum names, lower case, without the prefix).
TICKET_TYPES = {
    value: name.removeprefix("TICKET_TYPE_").lower()
    for name, value in ticket_events.TicketType.items()
    if value
}


@dataclass(frozen=True)
class PolicyState:
    """Which version of a policy decides new requests, and every activation so far."""

    active_version: int = 0
    activations: tuple[tuple[int, datetime, str], ...] = ()  # (version, when, by)


@dataclass(frozen=True)
class DelegationsState:
    """The delegations to one subject (the aggregate's id), revoked ones removed."""

    delegations: tuple[Delegation, ...] = ()


def registry() -> EventRegistry:
    """Every event the approvals service reads: its own and tickets' (requests for sign-off)."""
    return EventRegistry.of(approval_events, ticket_events)


def kinds() -> list[AggregateKind[Any]]:
    """The context's aggregates: requests, the policy's activations, each subject's delegations."""
    made = []
    for name, state, initial, evolve, deadlines in (
        (KIND, ApprovalRequest, ApprovalRequest, domain.evolve, domain.deadlines),
        (POLICY, PolicyState, lambda _policy_id: PolicyState(), _evolve_policy, None),
        (DELEGATIONS, DelegationsState, lambda _subject: DelegationsState(), _evolve_delegations, None),
    ):
        encode, decode = dataclass_codec(state)
        options = {"deadlines": deadlines} if deadlines is not None else {}
        made.append(
            AggregateKind(
                name=name, initial=initial, evolve=evolve, snapshot=encode, restore=decode, **options
            )
        )
    return made


def approval_id_for(request_id: str) -> str:
    return str(uuid.uuid5(APPROVAL_IDS, request_id))


class ApprovalsService:
    """Runs approval requests against their policies, exactly once per request id."""

    def __init__(
        self,
        store: EventStore,
        policies: Mapping[tuple[str, int], ApprovalPolicy],
        policy_id: str = "approvals",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        versions = sorted(version for (pid, version) in policies if pid == policy_id)
        if not versions:
            raise ValueError(f"no version of policy {policy_id!r} is loaded")
        self._store = store
        self._policies = dict(policies)
        self.policy_id = policy_id
        self._clock = clock
        self._first_version = versions[0]

    def now(self) -> datetime:
        return self._clock()

    # Policies -------------------------------------------------------------------------------------

    def policy(self, version: int) -> ApprovalPolicy:
        try:
            return self._policies[(self.policy_id, version)]
        except KeyError:
            known = ", ".join(str(v) for (pid, v) in sorted(self._policies) if pid == self.policy_id)
            raise NotFound(f"policy {self.policy_id} has no version {version} (loaded: {known})") from None

    def active_policy(self) -> ApprovalPolicy:
        state: PolicyState = self._store.load(POLICY, self.policy_id).state
        if not state.active_version:
            raise FailedPrecondition(f"no version of policy {self.policy_id} is active yet")
        return self.policy(state.active_version)

    def activate_first(self) -> None:
        """At start: activate the lowest loaded version when none ever was (idempotent by its request id)."""
        if self._store.load(POLICY, self.policy_id).state.active_version:
            return
        request = Request(f"activate-first/{self.policy_id}", "", "ActivatePolicy")
        self.activate(request, self._first_version, "approvals")

    def activate(self, request: Request, version: int, by: str) -> PolicyState:
        self.policy(version)  # NOT_FOUND for a version not loaded

        def decide(loaded: Loaded[PolicyState]) -> list[Message]:
            state = loaded.state
            if state.active_version == version:
                return []
            return [
                approval_events.PolicyVersionActivated(
                    policy_id=self.policy_id,
                    version=version,
                    activated_by=by,
                    previous_version=state.active_version,
                )
            ]

        return self._store.execute(request, POLICY, self.policy_id, decide).state

    def versions(self) -> list[int]:
        """The loaded versions of the service's policy, lowest first."""
        return sorted(version for (pid, version) in self._policies if pid == self.policy_id)

    def policy_state(self) -> PolicyState:
        return self._store.load(POLICY, self.policy_id).state

    def dry_run(
        self, version: int, since: datetime, until: datetime
    ) -> tuple[int, list[tuple[ApprovalRequest, str]]]:
        """How many requests were made in [since, until), and those ``version`` would give another chain,
        each with the rule it would choose (or why it would refuse the request); writes nothing."""
        candidate = self.policy(version)
        replayed, changed = 0, []
        for request in sorted(self.requests(), key=lambda r: (r.requested_at or since, r.approval_id)):
            if request.requested_at is None or not since <= request.requested_at < until or not request.rule:
                continue
            replayed += 1
            rule = domain.rechoose(request, candidate)
            if not _same_chain(self.policy_of(request), request.rule, candidate, rule):
                changed.append((request, rule))
        return replayed, changed

    # Requests -------------------------------------------------------------------------------------

    def request(self, request: Request, command: domain.RequestApproval) -> ApprovalRequest:
        policy = self.active_policy()
        return self._execute(request, command.approval_id, command, lambda _: policy)

    def decide(self, request: Request, approval_id: str, command: domain.DecideStep) -> ApprovalRequest:
        command = replace(command, delegations=self.delegations_to(command.by.subject))
        return self._execute(request, approval_id, command)

    def provide_info(
        self, request: Request, approval_id: str, command: domain.ProvideInfo
    ) -> ApprovalRequest:
        return self._execute(request, approval_id, command)

    def withdraw(self, request: Request, approval_id: str, command: domain.Withdraw) -> ApprovalRequest:
        return self._execute(request, approval_id, command)

    def _execute(
        self,
        request: Request,
        approval_id: str,
        command: domain.Command,
        policy_for: Callable[[ApprovalRequest], ApprovalPolicy] | None = None,
    ) -> ApprovalRequest:
        if not isinstance(command, domain.RequestApproval):
            self.get(approval_id)  # NOT_FOUND before anything else
        choose = policy_for or self.policy_of

        def decide(loaded: Loaded[ApprovalRequest]) -> list[Message]:
            return domain.decide(loaded.state, command, choose(loaded.state))

        return self._store.execute(request, KIND, approval_id, decide).state

    def policy_of(self, approval: ApprovalRequest) -> ApprovalPolicy:
        """The version a request started with: it decides the request to its end."""
        return self._policies[(approval.policy_id, approval.policy_version)]

    def get(self, approval_id: str, department: str = "") -> ApprovalRequest:
        loaded = self._store.load(KIND, approval_id)
        if not loaded.exists:
            raise NotFound(f"approval {approval_id} does not exist")
        approval: ApprovalRequest = loaded.state
        if department and not approval.involves(department):
            raise PermissionDenied(f"approval {approval_id} has no step for {department}")
        return approval

    def version(self, approval_id: str) -> int:
        return self._store.load(KIND, approval_id).version

    def requests(self) -> Iterable[ApprovalRequest]:
        return (approval for _, approval in self._store.states(KIND) if approval.exists)

    def pending(self, department: str = "") -> list[ApprovalRequest]:
        """Open requests, oldest first; with a department, those whose open step it decides now."""
        found = []
        for approval in self.requests():
            step = approval.open_step
            if step is None:
                continue
            if department and not any(
                step.places[n].decider.department == department for n in step.open_places
            ):
                continue
            found.append(approval)
        return sorted(
            found, key=lambda a: (a.requested_at or datetime.min.replace(tzinfo=UTC), a.approval_id)
        )

    # Delegations ----------------------------------------------------------------------------------

    def delegate(self, request: Request, grant: approval_events.DelegationGranted) -> DelegationsState:
        if grant.delegate_id == grant.delegator_id:
            raise InvalidArgument("delegate_id: a member cannot delegate to themselves")
        if dt(grant.valid_until) <= dt(grant.valid_from):
            raise InvalidArgument("valid_until: the delegation must end after it begins")

        def decide(loaded: Loaded[DelegationsState]) -> list[Message]:
            if any(d.delegation_id == grant.delegation_id for d in loaded.state.delegations):
                return []
            return [grant]

        return self._store.execute(request, DELEGATIONS, grant.delegate_id, decide).state

    def revoke(self, request: Request, delegate_id: str, delegation_id: str, by: str) -> DelegationsState:
        def decide(loaded: Loaded[DelegationsState]) -> list[Message]:
            [found] = [d for d in loaded.state.delegations if d.delegation_id == delegation_id] or [None]
            if found is None:
                raise NotFound(f"delegation {delegation_id} to {delegate_id} does not exist")
            if found.delegator_id != by:
                raise PermissionDenied(
                    f"only {found.delegator_id}, who delegated, may revoke delegation {delegation_id}"
                )
            return [
                approval_events.DelegationRevoked(
                    delegation_id=delegation_id, delegator_id=found.delegator_id, delegate_id=delegate_id
                )
            ]

        return self._store.execute(request, DELEGATIONS, delegate_id, decide).state

    def delegations_to(self, subject: str) -> tuple[Delegation, ...]:
        return self._store.load(DELEGATIONS, subject).state.delegations

    # Time and reactions -----------------------------------------------------------------------------

    def on_deadline(self, approval: ApprovalRequest, deadline: Deadline, now: datetime) -> list[Message]:
        return domain.on_deadline(approval, deadline, now, self.policy_of(approval))

    def react(self, envelope: Envelope, tx: Transaction) -> None:
        """The consumer runner's handler: a ticket's request for sign-off, or a department's return or
        extension request the tickets service sends for review, becomes an approval request."""
        command = _request_for(envelope)
        if command is None:
            return
        if not self.policy_state().active_version:
            # Only at the first start, before the first version is activated: the request waits for it.
            raise TransientError(f"no version of policy {self.policy_id} is active yet")
        policy = self.active_policy()
        try:
            tx.decide(
                KIND,
                command.approval_id,
                lambda loaded: domain.decide(loaded.state, command, policy),
                Cause.event(envelope),
            )
        except InvalidArgument as refused:
            # The ticket asked for what the policy does not cover: it hears a rejection with the reason,
            # rather than waiting for ever.
            rejected = approval_events.ApprovalRejected(
                approval_id=command.approval_id,
                ticket_id=command.ticket_id,
                reason=f"not covered by the policy: {refused}",
            )
            tx.decide(
                KIND,
                command.approval_id,
                lambda loaded: [] if loaded.exists else [rejected],
                Cause.event(envelope),
            )
        except DomainError as refused:
            # Requested already (a redelivery under another event id): nothing to do.
            log.info(
                "approval %s of ticket %s not opened: %s", command.approval_id, command.ticket_id, refused
            )


def _request_for(envelope: Envelope) -> domain.RequestApproval | None:
    """The approval request a ticket's event asks for, if any."""
    event = envelope.payload
    match envelope.event_type:
        case "TicketApprovalRequested":
            return domain.RequestApproval(
                approval_id=event.approval_id,
                ticket_id=event.ticket_id,
                kind=event.kind,
                amount_minor=event.amount.minor_units,
                currency=event.amount.currency,
                customer_tier=event.customer_tier or "standard",
                ticket_type=TICKET_TYPES.get(event.ticket_type, ""),
                justification=event.justification,
                by=Requester(event.requested_by),
                now=envelope.occurred_at,
            )
        case "DispatchReviewRequested":
            # The department that returned the dispatch (or asked for time) is the requester: it is
            # asked for more information and may withdraw.
            return domain.RequestApproval(
                approval_id=event.approval_id,
                ticket_id=event.ticket_id,
                kind=event.kind,
                amount_minor=0,
                currency="",
                customer_tier="standard",
                ticket_type=TICKET_TYPES.get(event.ticket_type, ""),
                justification=event.reason,
                by=Requester(event.requested_by, event.department),
                now=envelope.occurred_at,
                dispatch_id=event.dispatch_id,
                extension_s=event.extension.seconds,
            )
    return None


def _same_chain(old: ApprovalPolicy, old_rule: str, new: ApprovalPolicy, new_rule: str) -> bool:
    """Whether two rules ask the same deciders in the same steps (names aside)."""
    if new_rule.startswith("refused:"):
        return False
    return [replace(s, name="") for s in old.rule(old_rule).steps] == [
        replace(s, name="") for s in new.rule(new_rule).steps
    ]


def _evolve_policy(state: PolicyState, envelope: Envelope) -> PolicyState:
    event = envelope.payload
    if isinstance(event, approval_events.PolicyVersionActivated):
        return PolicyState(
            event.version, (*state.activations, (event.version, envelope.occurred_at, event.activated_by))
        )
    return state


def _evolve_delegations(state: DelegationsState, envelope: Envelope) -> DelegationsState:
    event = envelope.payload
    match event:
        case approval_events.DelegationGranted():
            delegation = Delegation(
                event.delegation_id,
                event.delegator_id,
                event.department,
                dt(event.valid_from),
                dt(event.valid_until),
                frozenset(event.titles),
            )
            return DelegationsState((*state.delegations, delegation))
        case approval_events.DelegationRevoked():
            return DelegationsState(
                tuple(d for d in state.delegations if d.delegation_id != event.delegation_id)
            )
    return state
