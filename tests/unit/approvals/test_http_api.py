"""The approvals HTTP API for departments, through FastAPI's test client, over the in-memory broker and
the same service layer as gRPC."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb
from fastapi.testclient import TestClient

from services.approvals.bootstrap import bootstrap
from services.approvals.domain import RequestApproval, Requester
from services.approvals.grpc_api import ApprovalsServicer
from services.approvals.handlers import EVENTS_TOPIC, ApprovalsService, approval_id_for, registry
from services.approvals.http_api import create_app
from services.platform.envelope import Actor, Envelope, decode
from services.platform.identity import Principal, Role, TokenVerifier, current_principal
from services.platform.requests import Request
from services.platform.settings import GrpcSettings, Settings
from tests.support.identity import token
from tests.support.memory import InMemoryBroker, memory_adapters

MONDAY = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
# Refunds above 10,000 CNY: the center's team lead, then finance, then legal.
LARGE = 2_000_000


def bearer(role: str, subject: str, **scopes: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, subject, **scopes)}"}


LEAD = bearer("agent", "lead-1", titles=["team_lead"])
REQUESTER = bearer("agent", "agent-7")
FINANCE = bearer("department", "fin-1", department="finance")
LEGAL = bearer("department", "legal-1", department="legal")
HOUSING = bearer("department", "housing-1", department="housing")


@dataclass
class Api:
    broker: InMemoryBroker
    approvals: ApprovalsService
    http: TestClient

    def events(self) -> list[Envelope]:
        return [decode(r.value, r.headers, registry()) for r in self.broker.records(EVENTS_TOPIC)]

    def requested(self, amount: int = LARGE) -> str:
        """A refund the agent agent-7 asked sign-off for (through the service layer, as tickets does)."""
        request_id = uuid.uuid4().hex
        command = RequestApproval(
            approval_id_for(request_id),
            "t-1",
            "refund",
            amount,
            "CNY",
            "standard",
            "complaint",
            "a goodwill refund",
            Requester("agent-7"),
            MONDAY,
        )
        return self.approvals.request(Request(request_id, "fp", "RequestApproval"), command).approval_id

    def decide(self, approval_id: str, headers: dict[str, str], step: int, **body: Any) -> Any:
        fields = {"request_id": uuid.uuid4().hex, "step_index": step, "decision": "approve", **body}
        return self.http.post(f"/v1/approvals/{approval_id}/decide", json=fields, headers=headers)


@pytest.fixture
def api() -> Iterator[Api]:
    broker = InMemoryBroker()
    settings = Settings(grpc=GrpcSettings(address="127.0.0.1:0"), instance_id=f"ap-{uuid.uuid4().hex[:6]}")
    context = bootstrap(settings, memory_adapters(broker, clock=lambda: MONDAY))
    context.store.start()
    context.service.activate_first()
    with TestClient(create_app(context.service, TokenVerifier(settings.auth))) as http:
        yield Api(broker, context.service, http)
    context.store.close(1)


def test_a_department_lists_its_open_step_approves_it_and_the_request_moves_on(api: Api) -> None:
    approval_id = api.requested()
    assert api.decide(approval_id, LEAD, 0).status_code == 200

    listed = api.http.get("/v1/approvals", headers=FINANCE).json()
    approved = api.decide(approval_id, FINANCE, 1, comment="within budget")

    assert [(a["approval_id"], a["open_steps"]) for a in listed["approvals"]] == [(approval_id, [1])]
    assert listed["approvals"][0]["steps"][1]["deciders"] == [{"department": "finance", "role": ""}]
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["status"], body["open_steps"]) == ("pending", [2])
    assert [s["status"] for s in body["steps"]] == ["approved", "approved", "open"]
    assert [(t["step_index"], t["department"], t["approver_id"], t["decision"]) for t in body["trail"]] == [
        (0, "center", "lead-1", "approve"),
        (1, "finance", "fin-1", "approve"),
    ]
    assert body["trail"][1]["comment"] == "within budget"
    assert api.http.get("/v1/approvals", headers=FINANCE).json()["approvals"] == []
    assert [a["approval_id"] for a in api.http.get("/v1/approvals", headers=LEGAL).json()["approvals"]] == [
        approval_id
    ]
    decided = [e for e in api.events() if e.event_type == "ApprovalDecided"]
    assert decided[-1].actor == Actor("fin-1", ("department",))


def test_a_team_lead_lists_the_steps_a_team_lead_decides_and_an_agent_without_the_title_none(
    api: Api,
) -> None:
    approval_id = api.requested()
    lead_list = api.http.get("/v1/approvals", headers=LEAD)
    plain_agent = api.http.get("/v1/approvals", headers=bearer("agent", "a-9"))
    duty_manager = api.http.get("/v1/approvals", headers=bearer("agent", "dm-1", titles=["duty_manager"]))
    assert lead_list.status_code == 200, lead_list.text
    assert [a["approval_id"] for a in lead_list.json()["approvals"]] == [approval_id]
    assert plain_agent.json()["approvals"] == [] and duty_manager.json()["approvals"] == []
    api.decide(approval_id, LEAD, 0)
    assert api.http.get("/v1/approvals", headers=LEAD).json()["approvals"] == []  # at finance now


def test_reading_a_request_gives_its_chain_and_full_trail(api: Api) -> None:
    approval_id = api.requested()
    api.decide(approval_id, LEAD, 0)

    response = api.http.get(f"/v1/approvals/{approval_id}", headers=FINANCE)

    assert response.status_code == 200
    body = response.json()
    assert (body["kind"], body["amount"], body["rule"], body["requested_by"]) == (
        "refund",
        {"minor_units": LARGE, "currency": "CNY"},
        "refund-large",
        "agent-7",
    )
    assert [s["name"] for s in body["steps"]] == ["team-lead", "finance", "legal"]
    assert body["steps"][1]["deadline"] is not None
    assert body["trail"][0]["decided_at"] == "2026-03-02T02:00:00Z"


def test_a_department_deciding_another_departments_step_is_refused_and_nothing_is_written(
    api: Api,
) -> None:
    approval_id = api.requested()
    api.decide(approval_id, LEAD, 0)
    recorded = len(api.events())

    legal = api.decide(approval_id, LEGAL, 1)
    housing = api.decide(approval_id, HOUSING, 1)
    read = api.http.get(f"/v1/approvals/{approval_id}", headers=HOUSING)

    assert (legal.status_code, housing.status_code, read.status_code) == (403, 403, 403)
    assert legal.json()["error"] == (
        f"step 1 (finance) of approval {approval_id} is for finance; you act for legal"
    )
    assert read.json()["error"] == f"approval {approval_id} has no step for housing"
    assert len(api.events()) == recorded


def test_a_decision_on_a_closed_request_is_a_conflict_naming_its_state(api: Api) -> None:
    approval_id = api.requested(amount=50_000)  # 500 CNY: the team lead alone
    assert api.decide(approval_id, LEAD, 0).json()["status"] == "granted"
    recorded = len(api.events())

    refused = api.decide(approval_id, LEAD, 0, decision="reject", comment="changed my mind")

    assert refused.status_code == 409
    assert refused.json()["error"] == f"approval {approval_id} is granted; it takes no more decisions"
    assert len(api.events()) == recorded


def test_a_body_breaking_the_contracts_limits_is_refused_naming_the_field(api: Api) -> None:
    approval_id = api.requested()
    for body, field in (
        ({"decision": "maybe"}, "decision"),
        ({"step_index": -1}, "step_index"),
        ({"request_id": " "}, "request_id"),
        ({"comment": "x" * 2001}, "comment"),
    ):
        response = api.decide(approval_id, LEAD, 0, **body)
        assert response.status_code == 422, body
        assert [e["loc"] for e in response.json()["detail"]] == [["body", field]]
    bad_page = api.http.get("/v1/approvals?page_token=abc", headers=FINANCE)
    assert (bad_page.status_code, bad_page.json()["error"]) == (
        400,
        "page_token is not one this service gave",
    )
    assert [e.event_type for e in api.events()] == [
        "PolicyVersionActivated",
        "ApprovalRequested",
        "ApprovalStepOpened",
    ]


def test_no_token_is_unauthenticated_and_a_role_the_rpc_does_not_grant_is_refused(api: Api) -> None:
    approval_id = api.requested()

    anonymous = api.http.get("/v1/approvals")
    unsigned = api.http.get("/v1/approvals", headers={"Authorization": "Bearer not-a-token"})
    service_lists = api.http.get("/v1/approvals", headers=bearer("service", "tickets"))
    department_withdraws = api.http.post(
        f"/v1/approvals/{approval_id}/withdraw", json={"request_id": "w-1"}, headers=FINANCE
    )

    assert (anonymous.status_code, unsigned.status_code, service_lists.status_code) == (401, 401, 403)
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert service_lists.json()["error"].startswith("ApprovalsService.ListPending needs one of the roles")
    # A department may withdraw what it asked for (a return it sent for review), not another's request.
    assert department_withdraws.status_code == 403
    assert "only the requester" in department_withdraws.json()["error"]


def test_unknown_requests_are_not_found(api: Api) -> None:
    assert api.http.get("/v1/approvals/nope", headers=FINANCE).status_code == 404
    assert api.decide("nope", FINANCE, 0).status_code == 404


def test_a_repeated_request_id_changes_nothing_and_means_the_same_over_grpc(api: Api) -> None:
    approval_id = api.requested()
    first = api.decide(approval_id, LEAD, 0, request_id="lead-ok-1")
    recorded = len(api.events())

    again = api.decide(approval_id, LEAD, 0, request_id="lead-ok-1")
    reused = api.decide(approval_id, LEAD, 0, request_id="lead-ok-1", comment="another")

    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert reused.status_code == 409
    assert len(api.events()) == recorded

    # The same request sent over gRPC first, then over HTTP, is one request.
    lead = Principal("lead-1", frozenset({Role.AGENT}), agent_id="lead-1", titles=frozenset({"team_lead"}))
    other = api.requested()
    reset = current_principal.set(lead)
    try:
        over_grpc = ApprovalsServicer(api.approvals).Decide(
            pb.DecideRequest(
                request_id="lead-ok-2",
                approval_id=other,
                step_index=0,
                decision=ev.DECISION_APPROVE,
                comment="fine",
            ),
            None,
        )
    finally:
        current_principal.reset(reset)
    recorded = len(api.events())
    over_http = api.decide(other, LEAD, 0, request_id="lead-ok-2", comment="fine")
    assert (over_http.status_code, over_http.json()["version"]) == (200, over_grpc.approval.version)
    assert len(api.events()) == recorded


def test_the_requester_answers_a_question_and_withdraws_the_request(api: Api) -> None:
    approval_id = api.requested()
    asked = api.decide(approval_id, LEAD, 0, decision="request_info", comment="which order is it?")
    assert (asked.json()["steps"][0]["status"], asked.json()["trail"][0]["decision"]) == (
        "awaiting_information",
        "request_info",
    )
    path = f"/v1/approvals/{approval_id}"

    stranger = api.http.post(
        f"{path}/provide-info", json={"request_id": "i-0", "answer": "x"}, headers=bearer("agent", "a-9")
    )
    answered = api.http.post(
        f"{path}/provide-info", json={"request_id": "i-1", "answer": "order 42"}, headers=REQUESTER
    )
    withdrawn = api.http.post(
        f"{path}/withdraw", json={"request_id": "w-1", "reason": "customer cancelled"}, headers=REQUESTER
    )
    again = api.http.post(f"{path}/withdraw", json={"request_id": "w-2"}, headers=REQUESTER)

    assert stranger.status_code == 403
    assert (answered.status_code, answered.json()["steps"][0]["status"]) == (200, "open")
    assert (withdrawn.status_code, withdrawn.json()["status"]) == (200, "withdrawn")
    assert withdrawn.json()["outcome_reason"] == "customer cancelled"
    assert (again.status_code, again.json()["error"]) == (
        409,
        f"approval {approval_id} is withdrawn; it takes no more decisions",
    )
