"""Composition root of the agents service: settings in; store, reactions, timers and gRPC out."""

from __future__ import annotations

import logging
import sys
import threading

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
from services.platform.process import ServiceProcess, grpc_server, open_store, reactions, run_main, wall_clock
from services.platform.settings import Settings
from services.platform.timers import schedule_deadlines

log = logging.getLogger("services.agents")

AgentsProcess = ServiceProcess[AgentsService]


def start(settings: Settings, stop: threading.Event | None = None) -> AgentsProcess:
    """Rebuild the agents from their topic, then serve gRPC, react to routing and intake, fire timers."""
    store = open_store(settings, "agents", (EVENTS_TOPIC, SNAPSHOTS_TOPIC), registry(), [agent_kind()])
    agents = AgentsService(store, wall_clock)
    scheduler = schedule_deadlines(store, {KIND: domain.on_deadline}, wall_clock)
    store.start()
    server = grpc_server(settings, service_pb2_grpc, service_pb2, AgentsServicer(agents))
    process = ServiceProcess("agents", store, agents, server, stop or threading.Event())
    process.run_in_background("reactions", reactions(settings, "agents", REACTS_TO, store, agents.react).run)
    process.run_in_background("timers", scheduler.run)
    log.info("agents: %d rebuilt from %d events", sum(1 for _ in store.states(KIND)), store.replayed_events)
    return process


if __name__ == "__main__":
    sys.exit(run_main("agents", start))
