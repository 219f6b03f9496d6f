"""The HTTP API for simple channel gateways (chat, e-mail, SMS, web callback), over the intake service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from callcenter.common.v1 import types_pb2
from fastapi import Depends, FastAPI, Path, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.intake import domain
from services.intake.domain import Contact
from services.intake.handlers import IntakeService
from services.platform.http import actor_of, caller, create_api
from services.platform.identity import Principal, TokenVerifier
from services.platform.requests import Request as WriteRequest

CHANNELS = {
    "chat": types_pb2.Channel.CHANNEL_CHAT,
    "email": types_pb2.Channel.CHANNEL_EMAIL,
    "sms": types_pb2.Channel.CHANNEL_SMS,
    "web_callback": types_pb2.Channel.CHANNEL_WEB_CALLBACK,
}
# Checked before anything is recorded, so a malformed request never leaves half a contact behind, and no
# request can make an event larger than the log takes. The same limits as the gRPC contract's.
RequestId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
QueueId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
ContactId = Annotated[str, Path(min_length=1, max_length=128, description="the contact's id")]


class NewContact(BaseModel):
    """A contact from a gateway. ``from`` is the customer's address or number: pseudonymised at once,
    never stored; one that is neither (nor a withheld number) is refused with 400 naming ``from``.
    Voice does not come this way: telephony reports it over gRPC."""

    model_config = ConfigDict(populate_by_name=True)

    request_id: RequestId = Field(description="the gateway's idempotency key, 1 to 128 characters")
    channel: Literal["chat", "email", "sms", "web_callback"]
    customer: str = Field(
        default="",
        alias="from",
        max_length=254,
        description=(
            "the customer's e-mail address or phone number (E.164, after the 00 prefix, national, or a "
            "tel: or sip: URI; one number in any of these forms is one customer); empty or a withheld "
            "form ('anonymous', 'restricted', ...) for an anonymous customer; anything else is refused "
            "with 400"
        ),
    )
    to: str = Field(
        default="", max_length=254, description="the center's address or number the customer wrote to"
    )
    subject: str = Field(
        default="", max_length=256, description="already stripped of personal data by the gateway"
    )
    queue_id: QueueId = Field(description="the queue to route to: 1 to 64 letters, digits, '_', '.' or '-'")
    language: str = Field(default="", max_length=16, description="a language tag, e.g. 'en' or 'zh-CN'")


class EndRequest(BaseModel):
    request_id: RequestId


class ContactJson(BaseModel):
    """A contact as a gateway sees it; ``caller`` is the masked form, never the address itself."""

    contact_id: str
    channel: str
    stage: str
    queue_id: str
    agent_id: str
    caller: str
    started_at: datetime | None
    ended_at: datetime | None


def contact_json(contact: Contact) -> ContactJson:
    return ContactJson(
        contact_id=contact.contact_id,
        channel=types_pb2.Channel.Name(contact.channel).removeprefix("CHANNEL_").lower(),
        stage=domain.Stage.Name(contact.stage).removeprefix("CONTACT_STAGE_").lower(),
        queue_id=contact.queue_id,
        agent_id=contact.agent_id,
        caller=contact.caller.masked,
        started_at=contact.started_at,
        ended_at=contact.ended_at,
    )


INTAKE = "callcenter.intake.v1.IntakeService"

Starting = Annotated[Principal, Depends(caller(INTAKE, "StartContact", "RequestRouting"))]
Ending = Annotated[Principal, Depends(caller(INTAKE, "EndContact"))]
Reading = Annotated[Principal, Depends(caller(INTAKE, "GetContact"))]


def create_app(intake: IntakeService, verifier: TokenVerifier) -> FastAPI:
    """The gateways' API over ``intake``; every route needs a bearer token that ``verifier`` accepts,
    for a role that the rpc the route stands for grants (``services.platform.access``)."""
    app = create_api("Intake for channel gateways", verifier, version="1")

    @app.post("/v1/contacts", status_code=status.HTTP_201_CREATED)
    def start_contact(body: NewContact, gateway: Starting) -> ContactJson:
        actor = actor_of(gateway)
        customer = intake.party(body.customer, "from")
        fields = {**body.model_dump(exclude={"request_id", "customer"}), "from": customer.hash}
        started = intake.execute(
            WriteRequest.of_fields(body.request_id, "StartContact", fields, actor=actor),
            domain.StartContact(
                contact_id="",
                channel=CHANNELS[body.channel],
                caller=customer,
                dialed_number=body.to,
                gateway="http",
                language=body.language,
                subject=body.subject,
            ),
        )
        # Two reports, each idempotent by its own request id: a gateway retrying after a failure
        # between them gets the same contact, routed once.
        routed = intake.execute(
            WriteRequest.of_fields(f"{body.request_id}/routing", "RequestRouting", fields, actor=actor),
            domain.RequestRouting(started.contact_id, body.queue_id),
        )
        return contact_json(routed)

    @app.post("/v1/contacts/{contact_id}/end")
    def end_contact(contact_id: ContactId, body: EndRequest, gateway: Ending) -> ContactJson:
        actor = actor_of(gateway)
        command = domain.EndContact(contact_id, domain.EndReason.CONTACT_END_REASON_CALLER)
        fields = {"contact_id": contact_id}
        request = WriteRequest.of_fields(body.request_id, "EndContact", fields, actor=actor)
        return contact_json(intake.execute(request, command))

    @app.get("/v1/contacts/{contact_id}")
    def get_contact(contact_id: ContactId, _caller: Reading) -> ContactJson:
        return contact_json(intake.get(contact_id))

    return app
