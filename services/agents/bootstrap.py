"""Wires the agents context over the adapters it is given: Kafka in main.py, the fakes in tests."""

from __future__ import annotations

from callcenter.agents.v1 import service_pb2, service_pb2_grpc

from services.agents import domain
from services.agents.grpc_api import AgentsServicer
from services.agents.handlers import (
    EVENTS_TOPIC,
    KIND,
    REACTS_TO,
    SNAPSHOTS_TOPIC,
    AgentsService,
    agent_kind,
    registry,
)
from services.platform.process import Adapters, Context, open_store, reactions, registration
from services.platform.settings import Settings
from services.platform.timers import schedule_deadlines


def bootstrap(settings: Settings, adapters: Adapters) -> Context[AgentsService]:
    store = open_store(
        settings, adapters, "agents", (EVENTS_TOPIC, SNAPSHOTS_TOPIC), registry(), [agent_kind()]
    )
    agents = AgentsService(store, adapters.clock)
    return Context(
        "agents",
        store,
        agents,
        servicers=[registration(service_pb2_grpc, service_pb2, AgentsServicer(agents))],
        runners=[reactions(settings, adapters, "agents", REACTS_TO, store, agents.react)],
        schedulers=[schedule_deadlines(store, {KIND: domain.on_deadline}, adapters.clock)],
    )
