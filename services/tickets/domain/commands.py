"""The commands a Ticket decides: from desks, supervisors, departments, reactions and the service itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from callcenter.common.v1 import types_pb2
from callcenter.tickets.v1 import events_pb2 as ev

from services.tickets.domain.state import Origin, Role, Satisfaction


@dataclass(frozen=True)
class Command:
    ticket_id: str
    now: datetime
    by: str
    # The caller's department, when the caller acts for one; "" for the center's own people.
    department: str = ""


@dataclass(frozen=True)
class CreateTicket(Command):
    type: int = ev.TICKET_TYPE_UNSPECIFIED
    priority: int = 0
    summary: str = ""
    category: str = ""
    source_contact_id: str = ""
    customer_hash: str = ""
    customer_masked: str = ""
    channel: int = types_pb2.CHANNEL_UNSPECIFIED
    origin: int = Origin.TICKET_ORIGIN_AGENT
    group_id: str = ""
    assignee_id: str = ""
    follows_ticket_id: str = ""


@dataclass(frozen=True)
class Assign(Command):
    assignee_id: str = ""
    group_id: str = ""
    automatic: bool = False
    strategy: str = ""


@dataclass(frozen=True)
class StartWork(Command):
    pass


@dataclass(frozen=True)
class AwaitCustomer(Command):
    reason: str = ""


@dataclass(frozen=True)
class RecordCustomerResponse(Command):
    pass


@dataclass(frozen=True)
class AddNote(Command):
    note_id: str = ""
    text: str = ""
    internal: bool = True


@dataclass(frozen=True)
class AddAttachment(Command):
    attachment_id: str = ""
    file_name: str = ""
    media_type: str = ""
    size_bytes: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class DispatchTicket(Command):
    # Ids for the dispatches this may make (one, or the catalogue's lead and assisting ones).
    dispatch_ids: tuple[str, ...] = ()
    to_department: str = ""
    role: int = Role.DISPATCH_ROLE_LEAD
    instructions: str = ""
    due_at: datetime | None = None


@dataclass(frozen=True)
class AcceptDispatch(Command):
    dispatch_id: str = ""


@dataclass(frozen=True)
class ReportProgress(Command):
    dispatch_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class CompleteDispatch(Command):
    dispatch_id: str = ""
    result: str = ""
    resolved: bool = False


@dataclass(frozen=True)
class ReturnDispatch(Command):
    dispatch_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RequestExtension(Command):
    dispatch_id: str = ""
    requested_due_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class ReviewReturn(Command):
    dispatch_id: str = ""
    accept: bool = False
    redispatch_to: str = ""
    new_dispatch_id: str = ""
    note: str = ""


@dataclass(frozen=True)
class ReviewExtension(Command):
    dispatch_id: str = ""
    grant: bool = False
    due_at: datetime | None = None
    note: str = ""


@dataclass(frozen=True)
class RequestApproval(Command):
    approval_id: str = ""
    kind: str = ""
    amount: types_pb2.Money | None = None
    justification: str = ""
    customer_tier: str = ""


@dataclass(frozen=True)
class ConcludeApproval(Command):
    approval_id: str = ""
    outcome: str = ""  # granted, rejected, expired
    reason: str = ""


@dataclass(frozen=True)
class Escalate(Command):
    to_group_id: str = ""
    new_priority: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Resolve(Command):
    resolution_code: str = ""
    resolution: str = ""
    first_contact: bool = False


@dataclass(frozen=True)
class Close(Command):
    reason: str = ""


@dataclass(frozen=True)
class Reopen(Command):
    reason: str = ""


@dataclass(frozen=True)
class MarkMerged(Command):
    """The duplicate's side of a merge."""

    into_ticket_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class AbsorbDuplicate(Command):
    """The main ticket's side of a merge."""

    duplicate_ticket_id: str = ""


@dataclass(frozen=True)
class RecordFollowUp(Command):
    reached: bool = False
    resolved: bool = False
    satisfaction: int = Satisfaction.SATISFACTION_UNSPECIFIED
    csat_score: int = 0
    comment: str = ""
    department_at_fault: bool = False
    # The id of the redo dispatch, should the follow-up send the ticket back to its lead department.
    redo_dispatch_id: str = ""


@dataclass(frozen=True)
class RecordCsat(Command):
    score: int = 0
    survey_id: str = ""


@dataclass(frozen=True)
class LinkFollowUpTicket(Command):
    follow_up_ticket_id: str = ""
