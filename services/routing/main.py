"""Composition root of the routing service: settings in; store, reactions, timers and gRPC out."""

from __future__ import annotations

import logging
import sys
import threading

from callcenter.routing.v1 import service_pb2, service_pb2_grpc

from services.platform.process import ServiceProcess, grpc_server, open_store, reactions, run_main, wall_clock
from services.platform.settings import Settings
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
    store = open_store(
        settings, "routing", (EVENTS_TOPIC, SNAPSHOTS_TOPIC), registry(), kinds(), forget_closed=True
    )
    routing = RoutingService(store, wall_clock)
    scheduler = DeadlineScheduler(routing.fire, clock=wall_clock)
    store.add_listener(scheduler.track)
    store.start()
    server = grpc_server(settings, service_pb2_grpc, service_pb2, RoutingServicer(routing))
    process = ServiceProcess("routing", store, routing, server, stop or threading.Event())
    runner = reactions(settings, "routing", REACTS_TO, store, routing.react, after_batch=routing.after_batch)
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
