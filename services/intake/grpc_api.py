"""The IntakeService gRPC servicer: requests become reports, contacts become messages; nothing else."""

from __future__ import annotations

from datetime import UTC

from callcenter.intake.v1 import service_pb2 as pb
from callcenter.intake.v1 import service_pb2_grpc

from services.intake import domain
from services.intake.domain import Contact
from services.intake.handlers import IntakeService
from services.platform.requests import Request


class IntakeServicer(service_pb2_grpc.IntakeServiceServicer):
    def __init__(self, intake: IntakeService) -> None:
        self._intake = intake

    def StartContact(self, request: pb.StartContactRequest, context) -> pb.StartContactResponse:
        caller = self._intake.party(request.caller_number, "caller_number")
        command = domain.StartContact(
            contact_id=request.contact_id,
            channel=request.channel,
            caller=caller,
            dialed_number=request.dialed_number,
            gateway=request.gateway,
            language=request.language,
            subject=request.subject,
        )
        contact = self._intake.execute(Request.of(request, context, caller_number=caller.hash), command)
        return pb.StartContactResponse(contact_id=contact.contact_id, contact=message(contact))

    def RecordIvrSelection(
        self, request: pb.RecordIvrSelectionRequest, context
    ) -> pb.RecordIvrSelectionResponse:
        command = domain.RecordIvrSelection(
            contact_id=request.contact_id,
            menu=request.menu,
            selection=request.selection,
            queue_id=request.queue_id,
            self_service_completed=request.self_service_completed,
        )
        return pb.RecordIvrSelectionResponse(contact=self._run(request, context, command))

    def RequestRouting(self, request: pb.RequestRoutingRequest, context) -> pb.RequestRoutingResponse:
        command = domain.RequestRouting(
            contact_id=request.contact_id,
            queue_id=request.queue_id,
            priority_boost=request.priority_boost,
            required_skills=[(s.skill, s.proficiency) for s in request.required_skills],
        )
        return pb.RequestRoutingResponse(contact=self._run(request, context, command))

    def ReportAnswered(self, request: pb.ReportAnsweredRequest, context) -> pb.ReportAnsweredResponse:
        command = domain.ReportAnswered(request.contact_id, request.agent_id)
        return pb.ReportAnsweredResponse(contact=self._run(request, context, command))

    def ReportHold(self, request: pb.ReportHoldRequest, context) -> pb.ReportHoldResponse:
        command = domain.ReportHold(request.contact_id)
        return pb.ReportHoldResponse(contact=self._run(request, context, command))

    def ReportResume(self, request: pb.ReportResumeRequest, context) -> pb.ReportResumeResponse:
        command = domain.ReportResume(request.contact_id)
        return pb.ReportResumeResponse(contact=self._run(request, context, command))

    def ReportTransfer(self, request: pb.ReportTransferRequest, context) -> pb.ReportTransferResponse:
        command = domain.ReportTransfer(
            contact_id=request.contact_id,
            to_queue_id=request.to_queue_id,
            to_agent_id=request.to_agent_id,
            consulted=request.consulted,
        )
        return pb.ReportTransferResponse(contact=self._run(request, context, command))

    def EndContact(self, request: pb.EndContactRequest, context) -> pb.EndContactResponse:
        command = domain.EndContact(
            request.contact_id,
            request.reason,
            request.detail,
            ended_at=request.ended_at.ToDatetime(UTC) if request.HasField("ended_at") else None,
            now=self._intake.now(),
        )
        return pb.EndContactResponse(contact=self._run(request, context, command))

    def RequestCallback(self, request: pb.RequestCallbackRequest, context) -> pb.RequestCallbackResponse:
        party = self._intake.number_to_call(request.callback_number, "callback_number")
        command = domain.RequestCallback(
            contact_id=request.contact_id,
            callback_party=party,
            window_start=request.window_start.ToDatetime(UTC) if request.HasField("window_start") else None,
            window_end=request.window_end.ToDatetime(UTC) if request.HasField("window_end") else None,
        )
        fingerprinted = Request.of(request, context, callback_number=party.hash)
        return pb.RequestCallbackResponse(contact=message(self._intake.execute(fingerprinted, command)))

    def GetContact(self, request: pb.GetContactRequest, context) -> pb.GetContactResponse:
        return pb.GetContactResponse(contact=message(self._intake.get(request.contact_id)))

    def _run(self, request, context, command: domain.Command) -> pb.Contact:
        return message(self._intake.execute(Request.of(request, context), command))


def message(contact: Contact) -> pb.Contact:
    """The read model of a contact, as the API returns it."""
    result = pb.Contact(
        contact_id=contact.contact_id,
        channel=contact.channel,
        caller=contact.caller.message(),
        dialed_number=contact.dialed_number,
        stage=contact.stage,
        queue_id=contact.queue_id,
        agent_id=contact.agent_id,
        ivr_path=list(contact.ivr_path),
        version=contact.version,
    )
    if contact.started_at is not None:
        result.started_at.FromDatetime(contact.started_at)
    if contact.ended_at is not None:
        result.ended_at.FromDatetime(contact.ended_at)
    return result
