"""Composition root of the agents service: settings in; store, reactions, timers and gRPC out."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
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
from services.platform.grpc_server import (
    RunningServer,
    ServiceRegistration,
    create_server,
    serve,
    stop_on_signals,
)
from services.platform.kafka import KafkaEventLog, KafkaSource
from services.platform.preflight import KafkaUnreachable, require_kafka
from services.platform.settings import Settings
from services.platform.telemetry import server_interceptors, setup_telemetry
from services.platform.timers import DeadlineScheduler, schedule_deadlines

log = logging.getLogger("services.agents")


@dataclass
class AgentsProcess:
    """Everything the agents service runs, started and stopped together."""

    store: EventStore
    agents: AgentsService
    runner: ConsumerRunner
    scheduler: DeadlineScheduler
    server: RunningServer
    stop: threading.Event
    threads: list[threading.Thread]

    def close(self, grace_s: float) -> None:
        self.stop.set()
        self.server.stop(grace_s)
        for thread in self.threads:
            thread.join(grace_s)
        self.store.close()


def start(settings: Settings, stop: threading.Event | None = None) -> AgentsProcess:
    """Rebuild the agents from their topic, then serve gRPC, react to routing and intake, fire timers."""
    stop = stop or threading.Event()

    def clock() -> datetime:
        return datetime.now(UTC)

    events = registry()
    log_ = KafkaEventLog(settings.kafka, EVENTS_TOPIC, SNAPSHOTS_TOPIC, f"agents-{settings.instance_id}")
    store = EventStore(log_, events, [agent_kind()], clock=clock, snapshot_every=5_000)
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
    threads = [
        threading.Thread(target=runner.run, args=(stop,), name="agents-reactions", daemon=True),
        threading.Thread(target=scheduler.run, args=(stop,), name="agents-timers", daemon=True),
    ]
    for thread in threads:
        thread.start()
    log.info(
        "agents serving on %s (port %d): %d agents rebuilt from %d events",
        settings.grpc.address,
        server.port,
        sum(1 for _ in store.states(KIND)),
        store.replayed_events,
    )
    return AgentsProcess(store, agents, runner, scheduler, server, stop, threads)


def main() -> int:
    stop = stop_on_signals()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    try:
        settings.require_cluster_addresses()
        require_kafka(settings.kafka)
    except (ValueError, KafkaUnreachable) as error:
        log.error("agents cannot start: %s", error)
        return 1
    telemetry = setup_telemetry(settings.telemetry, "agents", settings.instance_id)
    process = start(settings, stop)
    try:
        serve(process.server, settings.grpc.grace_period_s, stop=stop)
    finally:
        process.close(settings.grpc.grace_period_s)
        telemetry.shutdown()
    log.info("agents stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
