"""Composition root of the routing service: settings in; store, reactions, timers and gRPC out."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime

from callcenter.routing.v1 import service_pb2, service_pb2_grpc

from services.platform.consumer import ConsumerRunner
from services.platform.eventstore import EventStore
from services.platform.grpc_server import ServiceRegistration, create_server
from services.platform.kafka import KafkaEventLog, KafkaSource
from services.platform.process import ServiceProcess, run_main
from services.platform.settings import Settings
from services.platform.telemetry import server_interceptors
from services.platform.timers import DeadlineScheduler
from services.routing.grpc_api import RoutingServicer
from services.routing.handlers import (
    ENTRY,
    EVENTS_TOPIC,
    QUEUE,
    REACTS_TO,
    SNAPSHOTS_TOPIC,
    RoutingService,
    kinds,
    registry,
)

log = logging.getLogger("services.routing")

RoutingProcess = ServiceProcess[RoutingService]


def start(settings: Settings, stop: threading.Event | None = None) -> RoutingProcess:
    """Rebuild queues, entries and seats, then serve gRPC, react to intake and agents, fire timers."""

    def clock() -> datetime:
        return datetime.now(UTC)

    events = registry()
    log_ = KafkaEventLog(settings.kafka, EVENTS_TOPIC, SNAPSHOTS_TOPIC, f"routing-{settings.instance_id}")
    store = EventStore(
        log_,
        events,
        kinds(),
        clock=clock,
        snapshot_every=settings.store.snapshot_every,
        forget_closed_after=settings.store.forget_closed_after,
    )
    routing = RoutingService(store, clock)
    scheduler = DeadlineScheduler(routing.fire, clock=clock)
    store.add_listener(scheduler.track)
    store.start()
    runner = ConsumerRunner(
        "routing",
        KafkaSource(settings.kafka, "routing", REACTS_TO),
        store,
        events,
        routing.react,
        after_batch=routing.after_batch,
    )
    server = create_server(
        settings.grpc.address,
        [
            ServiceRegistration(
                service_pb2_grpc.add_RoutingServiceServicer_to_server,
                RoutingServicer(routing),
                service_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name,
            )
        ],
        max_workers=settings.grpc.max_workers,
        interceptors=server_interceptors(),
    )
    process = ServiceProcess("routing", store, routing, server, stop or threading.Event())
    process.run_in_background("reactions", runner.run)
    process.run_in_background("timers", scheduler.run)
    log.info(
        "routing: %d queues and %d open entries rebuilt from %d events",
        sum(1 for _ in store.states(QUEUE)),
        sum(1 for _, entry in store.states(ENTRY) if entry.open),
        store.replayed_events,
    )
    return process


if __name__ == "__main__":
    sys.exit(run_main("routing", start))
