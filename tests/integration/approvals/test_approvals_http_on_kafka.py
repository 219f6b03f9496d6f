"""The approvals HTTP API on the real broker, over TLS as a department's simple client calls it: the
department lists its open step and approves it and the request moves on, across a restart a repeated
request changes nothing; another department is refused with nothing written; a closed request, a
malformed body and a missing token are refused, each naming why."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from callcenter.approvals.v1 import events_pb2 as ev
from callcenter.approvals.v1 import service_pb2 as pb
from callcenter.approvals.v1 import service_pb2_grpc
from callcenter.common.v1 import types_pb2

from services.approvals.bootstrap import bootstrap
from services.approvals.main import http_app
from services.platform.envelope import EventRegistry, decode
from services.platform.http import bind, serve_http
from services.platform.identity import Role
from services.platform.kafka import KafkaEventLog
from services.platform.settings import Settings
from tests.support.identity import token
from tests.support.live import LiveContext

# Monday 2 March 2026, 10:00 in Beijing: a working morning of the cn-gov calendar.
BASE = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
REGISTRY = EventRegistry.of(ev)
# Refunds above 10,000 CNY: the center's team lead, then finance, then legal; up to 1,000 the lead alone.
LARGE, SMALL = 2_000_000, 50_000

LEAD = token(Role.AGENT, "lead-1", titles=["team_lead"])
FINANCE = token(Role.DEPARTMENT, "fin-1", department="finance")
LEGAL = token(Role.DEPARTMENT, "legal-1", department="legal")
HOUSING = token(Role.DEPARTMENT, "housing-1", department="housing")


class LiveApprovalsHttp(LiveContext):
    """The approvals service in this process on the session's broker, with its HTTP API as main serves it."""

    def __init__(self, kafka_broker: Any) -> None:
        super().__init__(kafka_broker, "approvals", bootstrap, service_pb2_grpc.ApprovalsServiceStub, BASE)

    def started(self) -> None:
        serve_http(
            http_app(self.process, self.settings),
            bind("127.0.0.1:0", "approvals"),
            self.process,
            self.settings.tls,
        )
        self.process.service.activate_first()  # as main does

    def call(self, method: str, path: str, bearer: str = "", body: dict | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.process.http_port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            method=method,
        )
        trusted = ssl.create_default_context(cafile=str(Settings().tls.ca))
        try:
            with urllib.request.urlopen(request, timeout=30, context=trusted) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    def decide(
        self, approval_id: str, bearer: str, step: int, decision: str = "approve", **body: Any
    ) -> tuple[int, dict]:
        fields = {"request_id": uuid.uuid4().hex, "step_index": step, "decision": decision, **body}
        return self.call("POST", f"/v1/approvals/{approval_id}/decide", bearer, fields)

    def requested(self, amount: int = LARGE) -> str:
        """A refund asked for over gRPC, as an internal client would."""
        request = pb.RequestApprovalRequest(
            request_id=uuid.uuid4().hex,
            ticket_id=f"t-{self.run}",
            kind="refund",
            amount=types_pb2.Money(minor_units=amount, currency="CNY"),
            justification="a goodwill refund",
            ticket_type="complaint",
        )
        return self.stub(Role.SERVICE, "tickets").RequestApproval(request).approval.approval_id

    def events(self, approval_id: str) -> list[Any]:
        reader = KafkaEventLog(
            self.broker.kafka, "approvals.events.v1", None, f"reader-{uuid.uuid4().hex[:6]}"
        )
        return [
            decode(r.value, r.headers, REGISTRY) for r in reader.replay({}) if r.key == approval_id.encode()
        ]


@pytest.fixture(scope="module")
def live(kafka_broker) -> Iterator[LiveApprovalsHttp]:
    served = LiveApprovalsHttp(kafka_broker)
    yield served
    served.close()


def test_a_department_lists_its_open_step_approves_it_and_the_request_moves_on(
    live: LiveApprovalsHttp,
) -> None:
    approval_id = live.requested()
    assert live.decide(approval_id, LEAD, 0)[0] == 200

    code, listed = live.call("GET", "/v1/approvals", FINANCE)
    assert code == 200
    [mine] = [a for a in listed["approvals"] if a["approval_id"] == approval_id]
    assert (mine["open_steps"], mine["steps"][1]["status"]) == ([1], "open")

    code, approved = live.decide(approval_id, FINANCE, 1, request_id=f"fin-{live.run}", comment="budgeted")
    assert (code, approved["status"], approved["open_steps"]) == (200, "pending", [2])
    assert [(t["department"], t["approver_id"], t["decision"]) for t in approved["trail"]] == [
        ("center", "lead-1", "approve"),
        ("finance", "fin-1", "approve"),
    ]
    code, listed = live.call("GET", "/v1/approvals", LEGAL)
    assert approval_id in [a["approval_id"] for a in listed["approvals"]]

    live.restart()

    code, again = live.decide(approval_id, FINANCE, 1, request_id=f"fin-{live.run}", comment="budgeted")
    assert (code, again) == (200, approved)
    code, granted = live.decide(approval_id, LEGAL, 2)
    assert (code, granted["status"]) == (200, "granted")
    viewed = (
        live.stub(Role.SUPERVISOR, "sup-1").GetRequest(pb.GetRequestRequest(approval_id=approval_id)).approval
    )
    assert viewed.status == pb.APPROVAL_STATUS_GRANTED
    assert [e.actor.subject for e in live.events(approval_id) if e.event_type == "ApprovalDecided"] == [
        "lead-1",
        "fin-1",
        "legal-1",
    ]
    code, read = live.call("GET", f"/v1/approvals/{approval_id}", FINANCE)
    assert (code, read["status"], len(read["trail"])) == (200, "granted", 3)


def test_a_department_deciding_another_departments_step_is_refused_and_nothing_is_written(
    live: LiveApprovalsHttp,
) -> None:
    approval_id = live.requested()
    live.decide(approval_id, LEAD, 0)
    written = len(live.events(approval_id))

    code, refused = live.decide(approval_id, LEGAL, 1)
    assert (code, refused["error"]) == (
        403,
        f"step 1 (finance) of approval {approval_id} is for finance; you act for legal",
    )
    assert live.decide(approval_id, HOUSING, 1)[0] == 403
    code, unseen = live.call("GET", f"/v1/approvals/{approval_id}", HOUSING)
    assert (code, unseen["error"]) == (403, f"approval {approval_id} has no step for housing")
    assert len(live.events(approval_id)) == written


def test_a_decision_on_a_closed_request_is_a_conflict_naming_its_state(live: LiveApprovalsHttp) -> None:
    approval_id = live.requested(SMALL)
    assert live.decide(approval_id, LEAD, 0)[1]["status"] == "granted"

    code, refused = live.decide(approval_id, LEAD, 0, decision="reject", comment="too late")

    assert (code, refused["error"]) == (409, f"approval {approval_id} is granted; it takes no more decisions")


def test_a_malformed_body_is_refused_naming_the_field_and_nothing_is_written(live: LiveApprovalsHttp) -> None:
    approval_id = live.requested()
    written = len(live.events(approval_id))

    code, refused = live.decide(approval_id, LEAD, 0, decision="maybe")
    assert code == 422
    assert [e["loc"] for e in refused["detail"]] == [["body", "decision"]]
    code, missing = live.call("POST", f"/v1/approvals/{approval_id}/decide", LEAD, {"decision": "approve"})
    assert code == 422
    assert {tuple(e["loc"]) for e in missing["detail"]} == {("body", "request_id"), ("body", "step_index")}
    code, bad_page = live.call("GET", "/v1/approvals?page_token=abc", FINANCE)
    assert (code, bad_page["error"]) == (400, "page_token is not one this service gave")
    assert len(live.events(approval_id)) == written


def test_no_token_is_unauthenticated(live: LiveApprovalsHttp) -> None:
    approval_id = live.requested()

    listed = live.call("GET", "/v1/approvals")
    decided = live.decide(approval_id, "", 0)

    assert (listed[0], decided[0]) == (401, 401)
    assert decided[1]["error"] == "no bearer token: send 'Authorization: Bearer <token>'"
    assert [e.event_type for e in live.events(approval_id)] == ["ApprovalRequested", "ApprovalStepOpened"]
