"""Properties every contract in proto/ keeps: unique event names, no personal data in events, one
request and one response message per RPC."""

from __future__ import annotations

import importlib
import re

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.platform.envelope import EventRegistry

CONTEXTS = ("intake", "routing", "agents", "tickets", "approvals")
SERVICES = {
    "intake": "IntakeService",
    "routing": "RoutingService",
    "agents": "AgentsService",
    "tickets": "TicketsService",
    "approvals": "ApprovalsService",
    "kpi": "KpiService",
}
EVENT_MODULES = [f"callcenter.{context}.v1.events_pb2" for context in CONTEXTS] + [
    "callcenter.workflow.v1.events_pb2"
]
PHONE_LIKE = re.compile(r"(phone|msisdn|caller_number|callback_number|mobile|email_address|ani)$")


def _fields(descriptor: Descriptor, seen: set[str] | None = None) -> list[tuple[str, FieldDescriptor]]:
    """Every field reachable from a message, with its path, nested messages included."""
    seen = seen if seen is not None else set()
    if descriptor.full_name in seen:
        return []
    seen.add(descriptor.full_name)
    found = []
    for field in descriptor.fields:
        found.append((f"{descriptor.full_name}.{field.name}", field))
        if field.message_type is not None:
            found.extend(_fields(field.message_type, seen))
    return found


def test_every_context_registers_into_one_registry_without_name_clashes() -> None:
    registry = EventRegistry.of(*(importlib.import_module(name) for name in EVENT_MODULES[:-1]))
    for event_type in (
        "ContactStarted",
        "ContactQueued",
        "AgentStateChanged",
        "TicketCreated",
        "ApprovalGranted",
    ):
        assert registry.knows(event_type)


@pytest.mark.parametrize("module_name", EVENT_MODULES)
def test_no_event_carries_a_personal_identifier_in_clear(module_name: str) -> None:
    module = importlib.import_module(module_name)
    offending = [
        path
        for message in module.DESCRIPTOR.message_types_by_name.values()
        for path, field in _fields(message)
        if PHONE_LIKE.search(field.name)
    ]
    assert offending == []


def test_callers_in_events_are_pseudonymised_references() -> None:
    from callcenter.intake.v1 import events_pb2

    caller = events_pb2.ContactStarted.DESCRIPTOR.fields_by_name["caller"]
    assert caller.message_type.full_name == "callcenter.common.v1.PartyReference"
    assert set(caller.message_type.fields_by_name) == {"hash", "masked"}


@pytest.mark.parametrize(("context", "service_name"), SERVICES.items())
def test_each_rpc_has_its_own_request_and_response(context: str, service_name: str) -> None:
    module = importlib.import_module(f"callcenter.{context}.v1.service_pb2")
    service = module.DESCRIPTOR.services_by_name[service_name]
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"


def test_every_service_has_generated_grpc_stubs() -> None:
    for context, service_name in SERVICES.items():
        stubs = importlib.import_module(f"callcenter.{context}.v1.service_pb2_grpc")
        assert hasattr(stubs, f"{service_name}Stub")
        assert hasattr(stubs, f"add_{service_name}Servicer_to_server")
