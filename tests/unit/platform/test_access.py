"""The RPC-to-roles table and the access interceptor: every refusal, over a real TLS server on port 0.

The probe serves real method names of the contracts with their real request types, counting the calls
that reach it, so each refusal is shown to change nothing behind the interceptor.
"""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import callcenter
import grpc
import jwt
import pytest
from callcenter.agents.v1 import events_pb2 as agents_ev
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.tickets.v1 import service_pb2 as tickets_pb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.platform.access import ACCESS, ACCESS_BY_SERVICE, authorize, markdown_table, roles_phrase
from services.platform.errors import PermissionDenied
from services.platform.grpc_server import ServiceRegistration, create_server
from services.platform.identity import Principal, Role
from services.platform.settings import Settings
from tests.support.identity import (
    anonymous_channel,
    channel_with_token,
    secure_channel,
    server_security,
    token,
)

AGENTS = "callcenter.agents.v1.AgentsService"
TICKETS = "callcenter.tickets.v1.TicketsService"
PROBED = {
    (AGENTS, "SetReady"): agents_pb.SetReadyRequest,
    (AGENTS, "ForceState"): agents_pb.ForceStateRequest,
    (AGENTS, "GetAgent"): agents_pb.GetAgentRequest,
    (TICKETS, "ListTickets"): tickets_pb.ListTicketsRequest,
}


FORCE_LOGOUT = agents_pb.ForceStateRequest(
    request_id="r-1", agent_id="a-17", state=agents_ev.AgentState.AGENT_STATE_LOGGED_OUT
)


def contract_services() -> list:
    """Every service in proto/ (each context's generated service_pb2)."""
    services = []
    for root in callcenter.__path__:
        for path in sorted(Path(root).glob("*/v1/service_pb2.py")):
            module = importlib.import_module(f"callcenter.{path.parent.parent.name}.v1.service_pb2")
            services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


def contract_rpcs() -> dict[str, object]:
    """Every rpc of every service in proto/ as gRPC names it (/package.Service/Method): its request type."""
    return {
        f"/{service.full_name}/{method.name}": method.input_type
        for service in contract_services()
        for method in service.methods
    }


def test_every_rpc_of_every_contract_has_an_entry_and_every_entry_an_rpc() -> None:
    rpcs = contract_rpcs()
    assert len(rpcs) > 40
    assert sorted(rpcs - ACCESS.keys()) == [], "rpcs without an entry in services/platform/access.py"
    assert sorted(ACCESS.keys() - rpcs) == [], "entries in services/platform/access.py for no rpc"


def test_every_entry_grants_at_least_one_role_and_scopes_only_fields_its_request_has() -> None:
    requests = contract_rpcs()
    for method, access in ACCESS.items():
        assert access.roles, method
        fields = requests[method].fields_by_name
        for scoped, role in ((access.agent_field, Role.AGENT), (access.department_field, Role.DEPARTMENT)):
            if scoped:
                assert role in access.roles, f"{method} scopes {role} but does not grant it"
                assert scoped in fields, f"{method}'s request has no field {scoped}"


def test_agents_may_act_only_on_themselves_and_departments_only_on_their_own_work() -> None:
    agent = Principal("a-17", frozenset({Role.AGENT}), agent_id="a-17")
    authorize(f"/{AGENTS}/SetReady", agent, agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-17"))
    with pytest.raises(PermissionDenied, match="own agent \\(a-17\\), and the request names 'a-18'"):
        authorize(f"/{AGENTS}/SetReady", agent, agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-18"))
    both = Principal("lead", frozenset({Role.AGENT, Role.SUPERVISOR}), agent_id="lead")
    authorize(f"/{AGENTS}/GetAgent", both, agents_pb.GetAgentRequest(agent_id="a-18"))
    water = Principal("water", frozenset({Role.DEPARTMENT}), department="water")
    authorize(f"/{TICKETS}/ListTickets", water, tickets_pb.ListTicketsRequest(department="water"))
    with pytest.raises(PermissionDenied, match="own department \\(water\\)"):
        authorize(f"/{TICKETS}/ListTickets", water, tickets_pb.ListTicketsRequest(department="roads"))


def test_only_the_admin_operates_every_service() -> None:
    operations = ACCESS_BY_SERVICE["callcenter.platform.v1.OperationsService"]
    assert {name: access.roles for name, access in operations.items()} == {
        "ListQuarantined": {Role.ADMIN},
        "SkipQuarantined": {Role.ADMIN},
    }


class Probe:
    def __init__(self) -> None:
        self.reached: list[tuple[str, str]] = []

    def handler(self, name: str):
        def behave(request, context):
            self.reached.append((name, str(request)))
            return b""

        return behave


@pytest.fixture
def probe():
    probe = Probe()
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for (service, name), request_type in PROBED.items():
        by_service.setdefault(service, {})[name] = grpc.unary_unary_rpc_method_handler(
            probe.handler(name),
            request_deserializer=request_type.FromString,
            response_serializer=lambda _: b"",
        )

    def add(_servicer, server) -> None:
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(service, handlers)
                for service, handlers in by_service.items()
            )
        )

    server = create_server(
        "127.0.0.1:0", [ServiceRegistration(add, probe, AGENTS)], max_workers=4, **server_security()
    )
    probe.address = f"127.0.0.1:{server.port}"
    yield probe
    server.stop(None)


def call(channel: grpc.Channel, service: str, name: str, request) -> grpc.StatusCode:
    try:
        channel.unary_unary(f"/{service}/{name}", request_serializer=type(request).SerializeToString)(
            request, timeout=10
        )
    except grpc.RpcError as error:
        call.details = error.details()
        return error.code()
    call.details = ""
    return grpc.StatusCode.OK


def test_an_agent_changes_only_its_own_state(probe: Probe) -> None:
    with secure_channel(probe.address, Role.AGENT, "a-17") as desk:
        assert (
            call(desk, AGENTS, "SetReady", agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-17"))
            == grpc.StatusCode.OK
        )
        code = call(desk, AGENTS, "SetReady", agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-18"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert call.details.startswith("AgentsService.SetReady: role agent acts only on its own agent (a-17)")
    assert [name for name, _ in probe.reached] == ["SetReady"]


def test_a_role_the_rpc_does_not_grant_is_refused_naming_the_rpc_and_the_role(probe: Probe) -> None:
    with secure_channel(probe.address, Role.AGENT, "a-17") as desk:
        code = call(desk, AGENTS, "ForceState", FORCE_LOGOUT)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert call.details == (
        "AgentsService.ForceState needs one of the roles supervisor; the token of a-17 has agent"
    )
    with secure_channel(probe.address, Role.SUPERVISOR, "sv-1") as tool:
        assert call(tool, AGENTS, "ForceState", FORCE_LOGOUT) == grpc.StatusCode.OK
    assert [name for name, _ in probe.reached] == ["ForceState"]


def test_a_department_sees_only_its_own_work(probe: Probe) -> None:
    with secure_channel(probe.address, Role.DEPARTMENT, "dept-water", department="water") as water:
        mine = call(water, TICKETS, "ListTickets", tickets_pb.ListTicketsRequest(department="water"))
        theirs = call(water, TICKETS, "ListTickets", tickets_pb.ListTicketsRequest(department="roads"))
    assert (mine, theirs) == (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED)
    assert len(probe.reached) == 1


def _claims(**changed) -> dict:
    """An agent a-17's claims, valid for five minutes, for this session's issuer and audience."""
    settings = Settings()
    now = datetime.now(UTC)
    base = {
        "iss": settings.auth.issuer,
        "aud": settings.auth.audience,
        "sub": "a-17",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "roles": ["agent"],
        "agent_id": "a-17",
    }
    return {**base, **changed}


def _signed(claims: dict) -> str:
    """Signed by the session's own issuer key."""
    key = serialization.load_pem_private_key(Settings().auth.signing_key.read_bytes(), password=None)
    return jwt.encode(_claims(**claims), key, algorithm="EdDSA")


def _forged_with_the_public_key_as_hmac_secret() -> str:
    return jwt.api_jws.PyJWS().encode(
        jwt.utils.force_bytes(jwt.api_jwt.json.dumps(_claims(roles=["supervisor"]), default=str)),
        b"any-secret-a-forger-knows-" + Settings().auth.public_key.read_bytes()[:16],
        algorithm="HS256",
    )


def _by_another_issuer_key() -> str:
    return jwt.encode(_claims(), ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")


@pytest.mark.parametrize(
    ("bearer", "why"),
    [
        (lambda: _signed({"exp": datetime.now(UTC) - timedelta(hours=1)}), "the token has expired"),
        (lambda: _signed({"aud": "another-system"}), "not for this audience"),
        (lambda: _signed({"iss": "someone-else"}), "not issued by"),
        (lambda: _signed({"roles": "agent"}), "roles claim must be a list"),
        (lambda: _signed({"titles": "team_lead"}), "titles claim must be a list of position names"),
        (_by_another_issuer_key, "signature does not verify"),
        (_forged_with_the_public_key_as_hmac_secret, "algorithm is not accepted"),
        (lambda: "not-a-jwt", "not a valid JWT"),
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "roles-not-a-list",
        "titles-not-a-list",
        "foreign-key",
        "hs256",
        "garbage",
    ],
)
def test_a_token_that_does_not_verify_is_unauthenticated_and_reaches_nothing(
    probe: Probe, bearer, why
) -> None:
    with channel_with_token(probe.address, bearer()) as desk:
        code = call(desk, AGENTS, "SetReady", agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-17"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert why in call.details
    assert probe.reached == []


def test_a_token_without_an_expiry_is_refused(probe: Probe) -> None:
    key = serialization.load_pem_private_key(Settings().auth.signing_key.read_bytes(), password=None)
    claims = {name: value for name, value in _claims().items() if name != "exp"}
    with channel_with_token(probe.address, jwt.encode(claims, key, algorithm="EdDSA")) as desk:
        assert call(
            desk, AGENTS, "SetReady", agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-17")
        ) == (grpc.StatusCode.UNAUTHENTICATED)
    assert call.details == "the token lacks the exp claim"


def test_no_token_is_unauthenticated_but_health_stays_open(probe: Probe) -> None:
    with anonymous_channel(probe.address) as anonymous:
        code = call(
            anonymous, AGENTS, "SetReady", agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-17")
        )
        health = health_pb2_grpc.HealthStub(anonymous).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert call.details.startswith("no bearer token")
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert probe.reached == []


def test_a_plaintext_client_cannot_reach_a_tls_server(probe: Probe) -> None:
    with grpc.insecure_channel(probe.address) as plain:
        code = call(plain, AGENTS, "SetReady", agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-17"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert probe.reached == []


def test_the_local_issuer_names_an_agents_own_agent_id() -> None:
    settings = Settings()
    claims = jwt.decode(
        token(Role.AGENT, "a-17"),
        serialization.load_pem_public_key(settings.auth.public_key.read_bytes()),
        algorithms=["EdDSA"],
        audience=settings.auth.audience,
    )
    assert (claims["sub"], claims["roles"], claims["agent_id"]) == ("a-17", ["agent"], "a-17")


def _proto_roles() -> dict[str, str]:
    """Each rpc's "Roles: ..." comment in proto/, by /package.Service/Method."""
    found = {}
    for path in sorted((Path(__file__).parents[3] / "proto").glob("callcenter/*/v1/service.proto")):
        text = path.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
        service = ""
        comment: list[str] = []
        for line in text.splitlines():
            stripped = line.strip()
            if match := re.match(r"service (\w+) \{", stripped):
                service = f"{package}.{match.group(1)}"
            if match := re.match(r"rpc (\w+)\(", stripped):
                roles = [c for c in comment if c.startswith("Roles: ")]
                found[f"/{service}/{match.group(1)}"] = roles[-1] if roles else ""
            comment = [*comment, stripped.removeprefix("// ")] if stripped.startswith("//") else []
    return found


def test_each_rpcs_proto_comment_names_exactly_the_roles_of_its_entry() -> None:
    said = _proto_roles()
    assert said.keys() == ACCESS.keys()
    wrong = {
        method: (said[method], roles_phrase(access))
        for method, access in ACCESS.items()
        if said[method] != roles_phrase(access)
    }
    assert wrong == {}, "proto comment vs services/platform/access.py"


def test_docs_security_shows_the_table_as_it_is() -> None:
    docs = (Path(__file__).parents[3] / "docs" / "security.md").read_text()
    assert markdown_table() in docs, "regenerate it: python -m services.platform.access"


def test_roles_of_other_systems_in_the_token_grant_nothing(probe: Probe) -> None:
    bearer = _signed({"roles": ["offline_access", "default-roles-callcenter", "root"]})
    with channel_with_token(probe.address, bearer) as desk:
        code = call(desk, AGENTS, "SetReady", agents_pb.SetReadyRequest(request_id="r-1", agent_id="a-17"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert call.details == "AgentsService.SetReady needs one of the roles agent; the token of a-17 has none"
    assert probe.reached == []
