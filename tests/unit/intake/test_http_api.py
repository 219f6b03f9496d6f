"""The channel gateways' HTTP API, through FastAPI's test client, over the in-memory broker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import events_pb2 as ev
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.intake.handlers import EVENTS_TOPIC, SNAPSHOTS_TOPIC, IntakeService, contact_kind, registry
from services.intake.http_api import create_app
from services.platform.envelope import Actor, Envelope, decode
from services.platform.eventstore import EventStore
from services.platform.identity import TokenVerifier
from services.platform.settings import IntakeSettings, PrivacySettings, Settings
from tests.support.identity import token
from tests.support.memory import InMemoryBroker, InMemoryEventLog

ADDRESS = "Jane.Doe@Example.org"
CHANNEL = types_pb2.Channel


@dataclass
class Gateway:
    broker: InMemoryBroker
    http: TestClient

    def events(self) -> list[Envelope]:
        return [decode(r.value, r.headers, registry()) for r in self.broker.records(EVENTS_TOPIC)]

    def start(self, request_id: str = "gw-1", **fields: str) -> dict:
        response = self.http.post("/v1/contacts", json=new_contact(request_id, **fields))
        assert response.status_code == 201, response.text
        return response.json()


def new_contact(request_id: str = "gw-1", **fields: str) -> dict:
    return {
        "request_id": request_id,
        "channel": "chat",
        "from": ADDRESS,
        "to": "support@center.example",
        "subject": "my invoice",
        "queue_id": "support",
        "language": "en",
        **fields,
    }


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    broker = InMemoryBroker()
    store = EventStore(
        InMemoryEventLog(broker, EVENTS_TOPIC, SNAPSHOTS_TOPIC, "intake-0"), registry(), [contact_kind()]
    )
    store.start()
    service = IntakeService(store, PrivacySettings(hmac_key=SecretStr("test-key")), IntakeSettings())
    app = create_app(service, TokenVerifier(Settings().auth))
    with TestClient(app, headers={"Authorization": f"Bearer {token('telephony', 'gw-chat')}"}) as http:
        yield Gateway(broker, http)


def test_a_gateway_starts_a_chat_routed_to_its_queue(gateway: Gateway) -> None:
    body = gateway.start()

    assert body["contact_id"]
    assert (body["stage"], body["channel"], body["queue_id"], body["caller"]) == (
        "queued",
        "chat",
        "support",
        "j***@***.org",
    )
    assert [e.event_type for e in gateway.events()] == ["ContactStarted", "RoutingRequested"]
    started, routed = (e.payload for e in gateway.events())
    assert (started.channel, started.dialed_number, started.subject, started.language) == (
        CHANNEL.CHANNEL_CHAT,
        "support@center.example",
        "my invoice",
        "en",
    )
    assert (routed.queue_id, routed.reason, routed.channel) == ("support", "gateway", CHANNEL.CHANNEL_CHAT)


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("email", CHANNEL.CHANNEL_EMAIL),
        ("sms", CHANNEL.CHANNEL_SMS),
        ("web_callback", CHANNEL.CHANNEL_WEB_CALLBACK),
    ],
)
def test_every_gateway_channel_becomes_its_contact_channel(
    gateway: Gateway, channel: str, expected: int
) -> None:
    body = gateway.start(channel=channel, **{"from": "+44 7700 900123"})

    assert (body["channel"], body["caller"]) == (channel, "*********0123")
    assert gateway.events()[0].payload.channel == expected


def test_the_customers_address_is_never_returned_nor_recorded(gateway: Gateway) -> None:
    body = gateway.start()
    read = gateway.http.get(f"/v1/contacts/{body['contact_id']}")

    for text in (str(body).lower(), read.text.lower()):
        assert "jane.doe" not in text and "example.org" not in text
    for record in gateway.broker.records(EVENTS_TOPIC):
        assert b"jane.doe" not in record.value.lower()


def test_a_retried_start_returns_the_same_contact_routed_once(gateway: Gateway) -> None:
    first = gateway.start("gw-7")
    again = gateway.start("gw-7")
    other = gateway.start("gw-8")

    assert first == again
    assert other["contact_id"] != first["contact_id"]
    assert [e.event_type for e in gateway.events() if e.aggregate_id == first["contact_id"]] == [
        "ContactStarted",
        "RoutingRequested",
    ]


def test_a_customer_closing_the_chat_ends_the_contact(gateway: Gateway) -> None:
    contact_id = gateway.start()["contact_id"]

    ended = gateway.http.post(f"/v1/contacts/{contact_id}/end", json={"request_id": "gw-end-1"})

    assert ended.status_code == 200
    assert (ended.json()["stage"], ended.json()["ended_at"] is not None) == ("ended", True)
    [end] = [e.payload for e in gateway.events() if e.event_type == "ContactEnded"]
    assert end.reason == ev.ContactEndReason.CONTACT_END_REASON_CALLER
    repeated = gateway.http.post(f"/v1/contacts/{contact_id}/end", json={"request_id": "gw-end-1"})
    assert (repeated.status_code, repeated.json()) == (200, ended.json())


def test_a_contact_is_read_back_as_it_is(gateway: Gateway) -> None:
    body = gateway.start()

    read = gateway.http.get(f"/v1/contacts/{body['contact_id']}")

    assert (read.status_code, read.json()) == (200, body)


def test_voice_and_incomplete_requests_are_refused_before_anything_is_recorded(gateway: Gateway) -> None:
    voice = gateway.http.post("/v1/contacts", json=new_contact(channel="voice"))
    no_queue = gateway.http.post("/v1/contacts", json=new_contact(queue_id=" "))
    no_request_id = gateway.http.post("/v1/contacts", json=new_contact(request_id=""))

    assert (voice.status_code, no_queue.status_code, no_request_id.status_code) == (422, 422, 422)
    assert gateway.events() == []


def test_domain_refusals_carry_the_reason_and_their_status(gateway: Gateway) -> None:
    unknown = gateway.http.get("/v1/contacts/nobody")
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "contact nobody is not known (never started, or ended long ago)"},
    )

    no_number = gateway.http.post("/v1/contacts", json=new_contact(channel="web_callback", **{"from": ""}))
    assert no_number.status_code == 400
    assert no_number.json()["error"] == "a web callback needs the customer's number: the center calls them"

    contact_id = gateway.start()["contact_id"]
    gateway.http.post(f"/v1/contacts/{contact_id}/end", json={"request_id": "gw-end-1"})
    again = gateway.http.post(f"/v1/contacts/{contact_id}/end", json={"request_id": "gw-end-2"})
    assert again.status_code == 409
    assert again.json()["error"].startswith(f"contact {contact_id} is ended (by caller at ")
    assert again.json()["error"].endswith("it cannot be ended again")

    missing = gateway.http.post("/v1/contacts/nobody/end", json={"request_id": "gw-end-3"})
    assert missing.status_code == 404


def test_one_customer_texting_from_the_number_in_two_forms_is_one_pseudonym(gateway: Gateway) -> None:
    first = gateway.start("gw-1", channel="sms", **{"from": "+86 139 1234 5678"})
    second = gateway.start("gw-2", channel="sms", **{"from": "13912345678"})

    assert first["caller"] == second["caller"] == "**********5678"
    started = [e.payload.caller for e in gateway.events() if e.event_type == "ContactStarted"]
    assert started[0] == started[1] and started[0].hash


@pytest.mark.parametrize("written", ["not a number", "+999 1234", "139-1234-5678 ext 2"])
def test_an_unreadable_from_is_refused_naming_the_field_and_nothing_is_recorded(
    gateway: Gateway, written: str
) -> None:
    refused = gateway.http.post("/v1/contacts", json=new_contact(channel="sms", **{"from": written}))

    assert refused.status_code == 400
    assert refused.json()["error"].startswith("from: not a phone number")
    assert written not in refused.text
    assert gateway.events() == []


def test_a_withheld_from_is_an_anonymous_customer_but_no_web_callback(gateway: Gateway) -> None:
    chat = gateway.start("gw-1", channel="sms", **{"from": "anonymous"})
    assert (chat["stage"], chat["caller"]) == ("queued", "")

    callback = gateway.http.post(
        "/v1/contacts", json=new_contact("gw-2", channel="web_callback", **{"from": "Restricted"})
    )
    assert callback.status_code == 400
    assert callback.json()["error"] == "a web callback needs the customer's number: the center calls them"
    assert [e.event_type for e in gateway.events()] == ["ContactStarted", "RoutingRequested"]


def test_a_request_without_a_token_is_unauthenticated_and_records_nothing(gateway: Gateway) -> None:
    response = gateway.http.post("/v1/contacts", json=new_contact("gw-anon"), headers={"Authorization": ""})
    forged = gateway.http.post(
        "/v1/contacts", json=new_contact("gw-forged"), headers={"Authorization": "Bearer not-a-token"}
    )
    assert (response.status_code, response.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert response.json() == {"error": "no bearer token: send 'Authorization: Bearer <token>'"}
    assert forged.status_code == 401 and "not a valid JWT" in forged.json()["error"]
    assert gateway.events() == []


def test_a_token_of_another_role_is_forbidden_naming_the_rpc(gateway: Gateway) -> None:
    desk = {"Authorization": f"Bearer {token('agent', 'a-17')}"}
    response = gateway.http.post("/v1/contacts", json=new_contact("gw-desk"), headers=desk)
    assert response.status_code == 403
    assert response.json()["error"] == (
        "IntakeService.StartContact needs one of the roles telephony; the token of a-17 has agent"
    )
    assert gateway.events() == []


def test_the_gateway_is_the_actor_of_what_it_reports(gateway: Gateway) -> None:
    body = gateway.start()
    gateway.http.post(f"/v1/contacts/{body['contact_id']}/end", json={"request_id": "gw-end-actor"})
    assert {e.actor for e in gateway.events()} == {Actor("gw-chat", ("telephony",))}
