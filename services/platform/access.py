"""Who may call what: the one table of every RPC of every service and the roles that may call it, and
the server interceptor that enforces it.

Every call but health and reflection needs a bearer token (``services.platform.identity``): none, or
one that does not verify, is refused with UNAUTHENTICATED. A role the RPC's entry does not list is
refused with PERMISSION_DENIED naming the RPC and the roles that may call it. Where an entry names a
request field for a role's scope, that role may call it only for its own: an agent for the agent its
token names, a department for its own department code. A refusal happens before the request reaches
the service, so it changes nothing. An RPC missing from the table is refused to everyone (and a unit
test fails for it). The proto comment of every rpc states its roles; a test keeps them equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from services.platform.errors import PermissionDenied, Unauthenticated, Unavailable
from services.platform.grpc_server import ALWAYS_OPEN, status_for, wrapped_handler
from services.platform.identity import Principal, Role, TokenVerifier, bearer_token, current_principal

TELEPHONY, AGENT, SUPERVISOR, ADMIN = Role.TELEPHONY, Role.AGENT, Role.SUPERVISOR, Role.ADMIN
DEPARTMENT, KPI_READER, SERVICE = Role.DEPARTMENT, Role.KPI_READER, Role.SERVICE


@dataclass(frozen=True)
class Access:
    """The roles that may call one RPC; ``agent_field`` / ``department_field`` name the request field
    that must equal the token's agent id / department code when the caller has only that role."""

    roles: frozenset[Role]
    agent_field: str = ""
    department_field: str = ""


def allow(*roles: Role, agent: str = "", department: str = "") -> Access:
    return Access(frozenset(roles), agent, department)


_OPERATIONS = {
    "ListQuarantined": allow(ADMIN),
    "SkipQuarantined": allow(ADMIN),
}

ACCESS_BY_SERVICE: Mapping[str, Mapping[str, Access]] = {
    "callcenter.intake.v1.IntakeService": {
        "StartContact": allow(TELEPHONY),
        "RecordIvrSelection": allow(TELEPHONY),
        "RequestRouting": allow(TELEPHONY),
        "ReportAnswered": allow(TELEPHONY),
        "ReportHold": allow(TELEPHONY),
        "ReportResume": allow(TELEPHONY),
        "ReportTransfer": allow(TELEPHONY),
        "EndContact": allow(TELEPHONY),
        "RequestCallback": allow(TELEPHONY, AGENT, SUPERVISOR),
        "GetContact": allow(TELEPHONY, AGENT, SUPERVISOR, SERVICE),
    },
    "callcenter.routing.v1.RoutingService": {
        "UpsertQueue": allow(ADMIN),
        "GetQueue": allow(ADMIN, SUPERVISOR),
        "ListQueues": allow(ADMIN, SUPERVISOR),
        "GetQueueStatus": allow(SUPERVISOR, ADMIN),
        "EstimateWait": allow(TELEPHONY, SUPERVISOR, SERVICE),
    },
    "callcenter.agents.v1.AgentsService": {
        "Login": allow(AGENT, agent="agent_id"),
        "SetReady": allow(AGENT, agent="agent_id"),
        "SetNotReady": allow(AGENT, agent="agent_id"),
        "Logout": allow(AGENT, agent="agent_id"),
        "AcceptOffer": allow(AGENT, agent="agent_id"),
        "RejectOffer": allow(AGENT, agent="agent_id"),
        "CompleteWrapUp": allow(AGENT, agent="agent_id"),
        "UpdateSkills": allow(SUPERVISOR, ADMIN),
        "ForceState": allow(SUPERVISOR),
        "GetAgent": allow(AGENT, SUPERVISOR, agent="agent_id"),
        "ListAgents": allow(SUPERVISOR, ADMIN),
    },
    "callcenter.kpi.v1.KpiService": {
        "QueryKpis": allow(KPI_READER, SUPERVISOR, ADMIN),
        "Wallboard": allow(KPI_READER, SUPERVISOR, ADMIN),
        "StaffingAdvice": allow(KPI_READER, SUPERVISOR, ADMIN),
    },
    # Tickets and approvals: a department answers only its own work. Where the request names no
    # department (a ticket id), the service checks that the ticket's dispatch is the caller's.
    "callcenter.tickets.v1.TicketsService": {
        "CreateTicket": allow(AGENT, SUPERVISOR, SERVICE),
        "Assign": allow(AGENT, SUPERVISOR),
        "Dispatch": allow(AGENT, SUPERVISOR),
        "ReplyFromDepartment": allow(DEPARTMENT),
        "AddNote": allow(AGENT, SUPERVISOR, DEPARTMENT),
        "RequestApproval": allow(AGENT, SUPERVISOR),
        "Escalate": allow(AGENT, SUPERVISOR),
        "Resolve": allow(AGENT, SUPERVISOR),
        "Close": allow(AGENT, SUPERVISOR),
        "Reopen": allow(AGENT, SUPERVISOR),
        "RecordCsat": allow(TELEPHONY, SERVICE),
        "GetTicket": allow(AGENT, SUPERVISOR, DEPARTMENT),
        "ListTickets": allow(AGENT, SUPERVISOR, DEPARTMENT, department="department"),
        "StartWork": allow(AGENT, SUPERVISOR),
        "AwaitCustomer": allow(AGENT, SUPERVISOR),
        "RecordCustomerResponse": allow(AGENT, SUPERVISOR, SERVICE),
        "AddAttachment": allow(AGENT, SUPERVISOR, DEPARTMENT),
        "AcceptDispatch": allow(DEPARTMENT),
        "ReportProgress": allow(DEPARTMENT),
        "CompleteDispatch": allow(DEPARTMENT),
        "ReturnDispatch": allow(DEPARTMENT),
        "RequestExtension": allow(DEPARTMENT),
        "ReviewReturn": allow(AGENT, SUPERVISOR),
        "ReviewExtension": allow(SUPERVISOR),
        "MergeTickets": allow(AGENT, SUPERVISOR),
        "RecordFollowUp": allow(AGENT, SUPERVISOR),
        "ListDispatches": allow(DEPARTMENT, SUPERVISOR, department="department"),
    },
    # Approvals: who may decide a step is the service's to check (the step's department and title,
    # or a delegation); here only which roles may ask at all.
    "callcenter.approvals.v1.ApprovalsService": {
        "RequestApproval": allow(SERVICE, SUPERVISOR),
        "Decide": allow(DEPARTMENT, SUPERVISOR, AGENT),
        "GetRequest": allow(DEPARTMENT, SUPERVISOR, AGENT, SERVICE),
        "ListPending": allow(DEPARTMENT, SUPERVISOR, AGENT, department="department"),
        "ProvideInformation": allow(AGENT, SUPERVISOR, DEPARTMENT, SERVICE),
        "Withdraw": allow(AGENT, SUPERVISOR, DEPARTMENT, SERVICE),
        "Delegate": allow(DEPARTMENT, SUPERVISOR, AGENT),
        "RevokeDelegation": allow(DEPARTMENT, SUPERVISOR, AGENT),
        "GetPolicy": allow(ADMIN, SUPERVISOR),
        "DryRunPolicy": allow(ADMIN, SUPERVISOR),
        "ActivatePolicy": allow(ADMIN),
    },
    "callcenter.platform.v1.OperationsService": _OPERATIONS,
}

ACCESS: Mapping[str, Access] = {
    f"/{service}/{method}": access
    for service, methods in ACCESS_BY_SERVICE.items()
    for method, access in methods.items()
}


def rpc_name(method: str) -> str:
    """``/callcenter.agents.v1.AgentsService/ForceState`` -> ``AgentsService.ForceState``."""
    service, _, name = method.strip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}.{name}"


def authorize(method: str, principal: Principal, request: Any, table: Mapping[str, Access] = ACCESS) -> None:
    """Refuse (PermissionDenied) unless one of the principal's roles may call ``method`` with this
    request: a scoped role only for its own agent or department."""
    access = table.get(method)
    if access is None:
        raise PermissionDenied(f"{rpc_name(method)} is not open to any role")
    granted = access.roles & principal.roles
    if not granted:
        raise PermissionDenied(
            f"{rpc_name(method)} needs one of the roles {', '.join(sorted(access.roles))}; "
            f"the token of {principal.subject} has {', '.join(sorted(principal.roles)) or 'none'}"
        )
    refusals = [_out_of_scope(access, role, principal, request) for role in granted]
    if all(refusals):
        raise PermissionDenied(f"{rpc_name(method)}: {refusals[0]}")


def _out_of_scope(access: Access, role: Role, principal: Principal, request: Any) -> str:
    """Why ``role`` may not make this request ("" when it may)."""
    if role is Role.AGENT and access.agent_field:
        asked = getattr(request, access.agent_field, "")
        if not principal.agent_id or asked != principal.agent_id:
            own = principal.agent_id or "no agent"
            return f"role agent acts only on its own agent ({own}), and the request names {asked!r}"
    if role is Role.DEPARTMENT and access.department_field:
        asked = getattr(request, access.department_field, "")
        if not principal.department or asked != principal.department:
            own = principal.department or "no department"
            return f"role department sees only its own department ({own}), and the request names {asked!r}"
    return ""


class AccessInterceptor(grpc.ServerInterceptor):
    """Authenticates every call's bearer token and authorises it against ``ACCESS``, before the call
    reaches the service; the caller is then ``identity.current_principal`` for the write path.
    ``table`` is ``ACCESS`` for every service; tests of the kernel give their probe services'."""

    def __init__(self, verifier: TokenVerifier, table: Mapping[str, Access] = ACCESS) -> None:
        self._verifier = verifier
        self._table = table

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(ALWAYS_OPEN):
            return handler
        admit = self._admitter(method)

        def single(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                token = admit(request, context)
                try:
                    return behavior(request, context)
                finally:
                    current_principal.reset(token)

            return call

        def streaming(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = admit(request, context)
                try:
                    yield from behavior(request, context)
                finally:
                    current_principal.reset(token)

            return call

        return wrapped_handler(handler, single, streaming)

    def _admitter(self, method: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        def admit(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                principal = self._verifier.verify(bearer_token(context.invocation_metadata()))
                authorize(method, principal, request, self._table)
            except (Unauthenticated, PermissionDenied, Unavailable) as refused:
                context.abort(status_for(refused), str(refused))
            return current_principal.set(principal)

        return admit


def roles_phrase(access: Access) -> str:
    """How the contracts and docs state an entry: ``Roles: agent (its own agent_id only), supervisor.``"""
    parts = []
    for role in Role:
        if role in access.roles:
            scope = {Role.AGENT: access.agent_field, Role.DEPARTMENT: access.department_field}.get(role)
            parts.append(f"{role} (its own {scope} only)" if scope else str(role))
    return "Roles: " + ", ".join(parts) + "."


def markdown_table() -> str:
    """The table as docs/security.md shows it (``python -m services.platform.access``)."""
    lines = ["| service | rpc | roles |", "|---|---|---|"]
    for service, methods in ACCESS_BY_SERVICE.items():
        for method, access in methods.items():
            roles = roles_phrase(access).removeprefix("Roles: ").removesuffix(".")
            lines.append(f"| {service.rsplit('.', 1)[-1]} | {method} | {roles} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
