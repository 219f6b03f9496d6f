"""Every RPC of every service, fuzzed from its descriptor: whatever a client sends, the answer is never
INTERNAL or UNKNOWN, and a refused request writes nothing.

Each service runs as ``main.py`` runs it (its bootstrap, the kernel's server and interceptors), over
the in-memory fakes of the Kafka ports; the KPI service over the embedded ClickHouse engine. A
queue, an agent and a contact exist, so that requests naming them reach past NOT_FOUND.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from callcenter.agents.v1 import service_pb2 as agents_pb
from callcenter.common.v1 import types_pb2
from callcenter.intake.v1 import service_pb2 as intake_pb
from callcenter.routing.v1 import events_pb2 as routing_ev
from callcenter.routing.v1 import service_pb2 as routing_pb
from google.protobuf import message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.agents.bootstrap import bootstrap as agents_bootstrap
from services.intake.bootstrap import bootstrap as intake_bootstrap
from services.kpi.bootstrap import bootstrap as kpi_bootstrap
from services.kpi.store import open_kpi_store
from services.platform.process import ServiceProcess, serve_context
from services.platform.settings import ClickHouseSettings, GrpcSettings, Settings
from services.routing.bootstrap import bootstrap as routing_bootstrap
from tests.support.embedded_clickhouse import unique_database
from tests.support.fuzz import messages
from tests.support.identity import CallerChannel
from tests.support.memory import InMemoryBroker, memory_adapters

KNOWN = ("billing", "a-1", "c-1", "general", "o-1", "contacts.events.v1")
ANSWERS_NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Served:
    broker: InMemoryBroker
    processes: dict[str, ServiceProcess]
    channels: dict[str, grpc.Channel]

    def records(self) -> int:
        return sum(len(partition) for topic in self.broker.topics.values() for partition in topic)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedded_clickhouse_dir: Path) -> Iterator[Served]:
    broker = InMemoryBroker()
    adapters = memory_adapters(broker)
    settings = Settings(
        grpc=GrpcSettings(address="127.0.0.1:0"),
        run_dir=tmp_path_factory.mktemp("run"),
        instance_id=f"fuzz-{uuid.uuid4().hex[:6]}",
        clickhouse=ClickHouseSettings(data_dir=embedded_clickhouse_dir, database=unique_database()),
    )
    facts = open_kpi_store(settings.clickhouse)
    facts.apply_schema()
    contexts = {
        "intake": intake_bootstrap(settings, adapters),
        "routing": routing_bootstrap(settings, adapters),
        "agents": agents_bootstrap(settings, adapters),
        "kpi": kpi_bootstrap(settings, adapters, facts),
    }
    processes = {}
    for name, context in contexts.items():
        # Only the requests under test write: no reactions, timers or gauges run beside them.
        context.runners, context.schedulers, context.background = [], [], []
        processes[name] = serve_context(settings, context)
    channels = {name: CallerChannel(f"127.0.0.1:{p.server.port}") for name, p in processes.items()}
    served = Served(broker, processes, channels)
    _seed(served)
    yield served
    for channel in channels.values():
        channel.close()
    for process in processes.values():
        process.close(2.0)


def _seed(served: Served) -> None:
    """A queue, an agent ready, a contact queued: what most requests name."""
    unary = served.channels["routing"].unary_unary
    config = routing_ev.QueueConfig(
        queue_id="billing", required_skills=[types_pb2.SkillLevel(skill="billing", proficiency=3)]
    )
    _call(
        unary,
        "/callcenter.routing.v1.RoutingService/UpsertQueue",
        routing_pb.UpsertQueueRequest(request_id="seed-queue", config=config),
    )
    login = agents_pb.LoginRequest(
        request_id="seed-login",
        agent_id="a-1",
        skills=[types_pb2.SkillLevel(skill="billing", proficiency=4)],
        ready=True,
    )
    _call(served.channels["agents"].unary_unary, "/callcenter.agents.v1.AgentsService/Login", login)
    intake = served.channels["intake"].unary_unary
    start = intake_pb.StartContactRequest(
        request_id="seed-start", contact_id="c-1", channel=1, dialed_number="100"
    )
    _call(intake, "/callcenter.intake.v1.IntakeService/StartContact", start)
    route = intake_pb.RequestRoutingRequest(request_id="seed-route", contact_id="c-1", queue_id="billing")
    _call(intake, "/callcenter.intake.v1.IntakeService/RequestRouting", route)


def _call(unary: Any, path: str, request: Any) -> Any:
    return unary(path, request_serializer=lambda m: m.SerializeToString())(request, timeout=10)


def _rpcs() -> list[tuple[str, Any]]:
    found = []
    for name, bootstrap_module in (
        ("intake", intake_pb),
        ("routing", routing_pb),
        ("agents", agents_pb),
    ):
        for service in bootstrap_module.DESCRIPTOR.services_by_name.values():
            found.extend((name, method) for method in service.methods)
    from callcenter.kpi.v1 import service_pb2 as kpi_pb
    from callcenter.platform.v1 import service_pb2 as platform_pb

    for name, module in (("kpi", kpi_pb), ("intake", platform_pb)):
        for service in module.DESCRIPTOR.services_by_name.values():
            found.extend((name, method) for method in service.methods)
    return found


RPCS = _rpcs()


@pytest.mark.parametrize(("service", "method"), RPCS, ids=[f"{s}.{m.name}" for s, m in RPCS])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_request_is_answered_internal_and_a_refused_one_writes_nothing(
    served: Served, service: str, method: Any, data: st.DataObject
) -> None:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = data.draw(messages(method.input_type, request_class, KNOWN), label="request")
    path = f"/{method.containing_service.full_name}/{method.name}"
    call = served.channels[service].unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    before = served.records()

    try:
        call(request, timeout=15)
    except grpc.RpcError as error:
        assert error.code() not in ANSWERS_NEVER, f"{path}: {error.code().name}: {error.details()}"
        assert served.records() == before, f"{path} refused ({error.code().name}) but wrote"
