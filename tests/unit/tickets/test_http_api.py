"""The tickets HTTP API for gateways and departments, through FastAPI's test client, over the
in-memory broker and the same service layer as gRPC."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from callcenter.tickets.v1 import events_pb2 as ev
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.platform.envelope import Actor, Envelope, decode
from services.platform.identity import TokenVerifier
from services.platform.requests import Request
from services.platform.settings import GrpcSettings, PrivacySettings, Settings
from services.tickets import domain as d
from services.tickets.bootstrap import bootstrap
from services.tickets.handlers import EVENTS_TOPIC, TicketsService, registry
from services.tickets.http_api import create_app
from tests.support.identity import token
from tests.support.memory import InMemoryBroker, memory_adapters
from tests.unit.tickets.conftest import T0

ADDRESS = "Jane.Doe@Example.org"


def bearer(role: str, subject: str, **scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, subject, **scopes)}"}


GATEWAY = bearer("service", "gw-web")
ENVIRONMENT = bearer("department", "env-1", department="environment")
URBAN = bearer("department", "urb-1", department="urban_management")


@dataclass
class Api:
    broker: InMemoryBroker
    tickets: TicketsService
    http: TestClient

    def events(self) -> list[Envelope]:
        return [decode(r.value, r.headers, registry()) for r in self.broker.records(EVENTS_TOPIC)]

    def open(self, request_id: str = "gw-1", **fields: Any) -> dict:
        response = self.http.post("/v1/tickets", json=new_ticket(request_id, **fields), headers=GATEWAY)
        assert response.status_code == 201, response.text
        return response.json()

    def dispatched(self) -> tuple[str, dict[str, str]]:
        """A complaint the center sent by the catalogue: environment leads, urban management assists."""
        ticket_id = self.open(uuid.uuid4().hex)["ticket_id"]
        command = d.DispatchTicket(
            ticket_id, T0, "a-1", dispatch_ids=(f"{ticket_id}-lead", f"{ticket_id}-assist")
        )
        ticket = self.tickets.execute(Request(uuid.uuid4().hex, "fp", "Dispatch"), command)
        return ticket_id, {x.department: x.dispatch_id for x in ticket.dispatches.values()}

    def post(self, path: str, body: dict, headers: dict[str, str] = ENVIRONMENT) -> Any:
        return self.http.post(path, json={"request_id": uuid.uuid4().hex, **body}, headers=headers)


def new_ticket(request_id: str = "gw-1", **fields: Any) -> dict:
    return {
        "request_id": request_id,
        "source": "web_form",
        "type": "complaint",
        "category": "environment.noise",
        "summary": "Night-time construction noise",
        "description": "Drilling every night after 11 pm.",
        "contact": ADDRESS,
        **fields,
    }


@pytest.fixture
def api() -> Iterator[Api]:
    broker = InMemoryBroker()
    settings = Settings(grpc=GrpcSettings(address="127.0.0.1:0"), instance_id=f"t-{uuid.uuid4().hex[:6]}")
    context = bootstrap(settings, memory_adapters(broker, clock=lambda: T0))
    context.store.start()
    privacy = PrivacySettings(hmac_key=SecretStr("test-key"))
    app = create_app(context.service, TokenVerifier(settings.auth), privacy)
    with TestClient(app) as http:
        yield Api(broker, context.service, http)
    context.store.close(1)


def test_a_gateway_opens_a_ticket_from_a_web_form_with_its_description(api: Api) -> None:
    body = api.open()

    assert (body["type"], body["status"], body["origin"], body["customer"]) == (
        "complaint",
        "new",
        "web_form",
        "j***@***.org",
    )
    assert body["first_response_due"] and body["resolution_due"]
    created, note = (e.payload for e in api.events() if e.event_type in ("TicketCreated", "TicketNoteAdded"))
    assert (created.origin, created.customer.masked) == (ev.TICKET_ORIGIN_WEB_FORM, "j***@***.org")
    assert (note.text, note.internal, note.first_response) == (
        "Drilling every night after 11 pm.",
        True,
        False,
    )
    assert {e.actor for e in api.events()} == {Actor("gw-web", ("service",))}


def test_an_email_ticket_comes_in_on_the_email_channel(api: Api) -> None:
    body = api.open(source="email", description="")

    assert body["origin"] == "email"
    [created] = [e.payload for e in api.events() if e.event_type == "TicketCreated"]
    assert (created.channel, created.origin) == (3, ev.TICKET_ORIGIN_EMAIL)
    assert [e.event_type for e in api.events() if e.event_type == "TicketNoteAdded"] == []


def test_the_customers_address_is_never_returned_nor_recorded(api: Api) -> None:
    body = api.open()

    assert "jane.doe" not in str(body).lower()
    for record in api.broker.records(EVENTS_TOPIC):
        assert b"jane.doe" not in record.value.lower() and b"example.org" not in record.value.lower()


def test_a_repeated_request_id_changes_nothing_and_returns_the_same_ticket(api: Api) -> None:
    first = api.open("gw-7")
    recorded = len(api.events())
    again = api.open("gw-7")

    assert again == first
    assert len(api.events()) == recorded
    reused = api.http.post("/v1/tickets", json=new_ticket("gw-7", summary="Another"), headers=GATEWAY)
    assert reused.status_code == 409


def test_an_unreadable_contact_is_refused_naming_the_field_and_nothing_is_recorded(api: Api) -> None:
    refused = api.http.post("/v1/tickets", json=new_ticket(contact="not a number"), headers=GATEWAY)

    assert refused.status_code == 400
    assert refused.json()["error"].startswith("contact: not a phone number")
    assert api.events() == []


def test_a_body_breaking_the_contracts_limits_is_refused_before_anything_is_recorded(api: Api) -> None:
    for fields in ({"summary": ""}, {"summary": "x" * 257}, {"type": "follow_up"}, {"request_id": " "}):
        response = api.http.post("/v1/tickets", json=new_ticket(**fields), headers=GATEWAY)
        assert response.status_code == 422, fields
    assert api.events() == []


def test_only_a_gateway_opens_tickets_here(api: Api) -> None:
    desk = api.http.post("/v1/tickets", json=new_ticket(), headers=bearer("agent", "a-1"))
    department = api.http.post("/v1/tickets", json=new_ticket(), headers=ENVIRONMENT)
    anonymous = api.http.post("/v1/tickets", json=new_ticket())

    assert (desk.status_code, department.status_code, anonymous.status_code) == (403, 403, 401)
    assert (
        desk.json()["error"]
        == "POST /v1/tickets needs one of the roles service; the token of a-1 (roles: agent)"
    )
    assert api.events() == []


def test_a_department_lists_its_open_dispatches_and_reads_one(api: Api) -> None:
    ticket_id, ids = api.dispatched()

    listed = api.http.get("/v1/dispatches", headers=ENVIRONMENT).json()
    one = api.http.get(f"/v1/tickets/{ticket_id}/dispatches/{ids['environment']}", headers=ENVIRONMENT)

    assert [(x["dispatch_id"], x["status"], x["role"]) for x in listed["dispatches"]] == [
        (ids["environment"], "dispatched", "lead")
    ]
    assert (one.status_code, one.json()) == (200, listed["dispatches"][0])
    assert one.json()["summary"] == "Night-time construction noise"


def test_a_department_works_a_dispatch_through_to_completion(api: Api) -> None:
    ticket_id, ids = api.dispatched()
    path = f"/v1/tickets/{ticket_id}/dispatches/{ids['environment']}"

    accepted = api.post(f"{path}/accept", {})
    progressed = api.post(f"{path}/progress", {"note": "inspector sent"})
    extended = api.post(
        f"{path}/extension", {"requested_due_at": "2026-04-30T10:00:00+08:00", "reason": "permits"}
    )
    completed = api.post(f"{path}/complete", {"result": "site fined", "resolved": True})

    assert [r.status_code for r in (accepted, progressed, extended, completed)] == [200, 200, 200, 200]
    assert extended.json()["requested_due_at"] == "2026-04-30T02:00:00Z"
    assert (completed.json()["status"], completed.json()["result"], completed.json()["resolved"]) == (
        "completed",
        "site fined",
        True,
    )
    assert api.http.get("/v1/dispatches", headers=ENVIRONMENT).json()["dispatches"] == []
    done = api.http.get("/v1/dispatches?status=completed", headers=ENVIRONMENT).json()["dispatches"]
    assert [x["dispatch_id"] for x in done] == [ids["environment"]]
    actors = {e.actor for e in api.events() if e.event_type.startswith("Dispatch")}
    assert actors == {Actor("env-1", ("department",))}


def test_a_department_returns_a_dispatch_with_its_reason(api: Api) -> None:
    ticket_id, ids = api.dispatched()

    returned = api.post(
        f"/v1/tickets/{ticket_id}/dispatches/{ids['environment']}/return", {"reason": "not ours"}
    )

    assert (returned.status_code, returned.json()["status"]) == (200, "returned")


def test_an_illegal_step_is_a_conflict_naming_the_current_state(api: Api) -> None:
    ticket_id, ids = api.dispatched()

    refused = api.post(
        f"/v1/tickets/{ticket_id}/dispatches/{ids['environment']}/complete", {"result": "done"}
    )

    assert refused.status_code == 409
    assert refused.json()["error"] == (
        f"dispatch {ids['environment']} to environment is dispatched; "
        f"a dispatch must be accepted before it is completed"
    )


def test_a_department_acts_only_on_its_own_dispatches(api: Api) -> None:
    ticket_id, ids = api.dispatched()
    others = f"/v1/tickets/{ticket_id}/dispatches/{ids['urban_management']}"

    read = api.http.get(others, headers=ENVIRONMENT)
    accepted = api.post(f"{others}/accept", {})
    stranger = api.http.get(others, headers=bearer("department", "fin-1", department="finance"))
    center = api.http.get(others, headers=bearer("supervisor", "sup-1"))

    assert (read.status_code, accepted.status_code, stranger.status_code, center.status_code) == (
        403,
        403,
        403,
        403,
    )
    assert accepted.json()["error"] == (
        f"dispatch {ids['urban_management']} is urban_management's; environment answers only its own"
    )
    assert api.post(f"{others}/accept", {}, headers=URBAN).status_code == 200


def test_unknown_tickets_and_dispatches_are_not_found(api: Api) -> None:
    ticket_id, _ = api.dispatched()

    assert api.http.get("/v1/tickets/nope/dispatches/d-1", headers=ENVIRONMENT).status_code == 404
    assert api.http.get(f"/v1/tickets/{ticket_id}/dispatches/nope", headers=ENVIRONMENT).status_code == 404
    assert api.post("/v1/tickets/nope/dispatches/d-1/accept", {}).status_code == 404


def test_a_repeated_department_request_changes_nothing(api: Api) -> None:
    ticket_id, ids = api.dispatched()
    path = f"/v1/tickets/{ticket_id}/dispatches/{ids['environment']}/accept"

    first = api.http.post(path, json={"request_id": "env-accept-1"}, headers=ENVIRONMENT)
    recorded = len(api.events())
    again = api.http.post(path, json={"request_id": "env-accept-1"}, headers=ENVIRONMENT)

    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert len(api.events()) == recorded


def test_department_bodies_keep_the_contracts_limits(api: Api) -> None:
    ticket_id, ids = api.dispatched()
    path = f"/v1/tickets/{ticket_id}/dispatches/{ids['environment']}"

    assert api.post(f"{path}/return", {"reason": ""}).status_code == 422
    assert api.post(f"{path}/progress", {"note": "x" * 2001}).status_code == 422
    late = {"requested_due_at": "2100-01-01T00:00:00Z", "reason": "r"}
    naive = {"requested_due_at": "2026-04-30T10:00:00", "reason": "r"}
    assert (
        api.post(f"{path}/extension", late).status_code,
        api.post(f"{path}/extension", naive).status_code,
    ) == (
        422,
        422,
    )
