"""The kernel's HTTP edge: tokens checked as gRPC checks them, and the kernel's errors as statuses."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from services.platform.errors import (
    ConcurrencyError,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    RequestIdReused,
    Unauthenticated,
    Unavailable,
)
from services.platform.http import caller, create_api, status_of
from services.platform.identity import Principal, Role, TokenVerifier
from services.platform.settings import Settings
from tests.support.identity import token

TICKETS = "callcenter.tickets.v1.TicketsService"
RAISED = {
    "invalid": InvalidArgument("summary is required"),
    "missing": NotFound("ticket t-9 does not exist"),
    "state": FailedPrecondition(
        "dispatch d-1 to finance is completed; only a dispatched one can be accepted"
    ),
    "unavailable": Unavailable("the service is starting"),
    "overloaded": Overloaded("too many writes wait"),
}

Gateway = Annotated[Principal, Depends(caller(TICKETS, "CreateTicket", roles=(Role.SERVICE,)))]
Department = Annotated[Principal, Depends(caller(TICKETS, "ListDispatches"))]


@pytest.fixture
def client() -> TestClient:
    app = create_api("probe", TokenVerifier(Settings().auth))

    @app.get("/gateway")
    def gateway(principal: Gateway) -> dict:
        return {"subject": principal.subject}

    @app.get("/department")
    def department(principal: Department) -> dict:
        return {"department": principal.department}

    @app.get("/raise/{kind}")
    def fail(kind: str) -> dict:
        raise RAISED[kind]

    return TestClient(app)


def _bearer(role: str, subject: str, **scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, subject, **scopes)}"}


def test_a_request_without_a_token_is_unauthenticated(client: TestClient) -> None:
    response = client.get("/gateway")
    forged = client.get("/gateway", headers={"Authorization": "Bearer not-a-token"})

    assert (response.status_code, response.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert response.json() == {"error": "no bearer token: send 'Authorization: Bearer <token>'"}
    assert forged.status_code == 401 and "not a valid JWT" in forged.json()["error"]


def test_a_role_the_rpc_does_not_grant_is_forbidden_naming_the_rpc(client: TestClient) -> None:
    response = client.get("/gateway", headers=_bearer("telephony", "pbx-1"))

    assert response.status_code == 403
    assert response.json()["error"].startswith("TicketsService.CreateTicket needs one of the roles")


def test_a_role_the_rpc_grants_but_the_route_does_not_is_forbidden(client: TestClient) -> None:
    response = client.get("/gateway", headers=_bearer("agent", "a-1"))

    assert response.status_code == 403
    assert (
        response.json()["error"]
        == "GET /gateway needs one of the roles service; the token of a-1 (roles: agent)"
    )
    assert client.get("/gateway", headers=_bearer("service", "gw-web")).json() == {"subject": "gw-web"}


def test_a_scoped_rpc_is_granted_for_the_tokens_own_department_only(client: TestClient) -> None:
    own = client.get("/department", headers=_bearer("department", "fin-1", department="finance"))
    none = client.get("/department", headers=_bearer("department", "nobody"))

    assert (own.status_code, own.json()) == (200, {"department": "finance"})
    assert none.status_code == 403 and "its own department (no department)" in none.json()["error"]


@pytest.mark.parametrize(
    ("kind", "code"),
    [("invalid", 400), ("missing", 404), ("state", 409), ("unavailable", 503), ("overloaded", 429)],
)
def test_kernel_errors_answer_their_status_with_the_message(client: TestClient, kind: str, code: int) -> None:
    response = client.get(f"/raise/{kind}", headers=_bearer("service", "gw-web"))

    assert (response.status_code, response.json()) == (code, {"error": str(RAISED[kind])})
    if code in (429, 503):
        assert response.headers["Retry-After"] == "1"


def test_every_kernel_error_has_its_status() -> None:
    assert status_of(InvalidArgument("x")) == 400
    assert status_of(Unauthenticated("x")) == 401
    assert status_of(PermissionDenied("x")) == 403
    assert status_of(NotFound("x")) == 404
    assert status_of(FailedPrecondition("x")) == 409
    assert status_of(RequestIdReused("x")) == 409
    assert status_of(ConcurrencyError("t-1", 1, 2)) == 409
    assert status_of(DomainError("x")) == 409
    assert status_of(Unavailable("x")) == 503
