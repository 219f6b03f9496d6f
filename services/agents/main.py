"""Composition root of the agents service: settings in; store, reactions, timers and gRPC out."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime

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
from services.platform.consumer import ConsumerRunner
from services.platform.eventstore import EventStore
from services.platform.grpc_server import ServiceRegistration, create_server
from services.platform.kafka import KafkaEventLog, KafkaSource
from services.platform.process import ServiceProcess, run_main
from services.platform.settings import Settings
from services.platform.telemetry import server_interceptors
from services.platform.timers import schedule_deadlines

log = logging.getLogger("services.agents")

AgentsProcess = ServiceProcess[AgentsService]


def start(settings: Settings, stop: threading.Event | None = None) -> AgentsProcess:
    """Rebuild the agents from their topic, then serve gRPC, react to routing and intake, fire timers."""

    def clock() -> datetime:
        return datetime.now(UTC)

    events = registry()
    log_ = KafkaEventLog(settings.kafka, EVENTS_TOPIC, SNAPSHOTS_TOPIC, f"agents-{settings.instance_id}")
    store = EventStore(
        log_, events, [agent_kind()], clock=clock, snapshot_every=settings.store.snapshot_every
    )
    agents = AgentsService(store, clock)
    scheduler = schedule_deadlines(store, {KIND: domain.on_deadline}, clock)
    store.start()
    runner = ConsumerRunner(
        "agents", KafkaSource(settings.kafka, "agents", REACTS_TO), store, events, agents.react
    )
    server = create_server(
        settings.grpc.address,
        [
            ServiceRegistration(
                service_pb2_grpc.add_AgentsServiceServicer_to_server,
                AgentsServicer(agents),
                service_pb2.DESCRIPTOR.services_by_name["AgentsService"].full_name,
            )
        ],
        max_workers=settings.grpc.max_workers,
        interceptors=server_interceptors(),
    )
    process = ServiceProcess("agents", store, agents, server, stop or threading.Event())
    process.run_in_background("reactions", runner.run)
    process.run_in_background("timers", scheduler.run)
    log.info(
        "agents: %d agents rebuilt from %d events", sum(1 for _ in store.states(KIND)), store.replayed_events
    )
    return process


if __name__ == "__main__":
    sys.exit(run_main("agents", start))
