"""The routing service's entry point: its context (bootstrap.py) over Kafka, served until SIGTERM."""

from __future__ import annotations

import logging
import threading

from services.platform.process import ServiceProcess, kafka_adapters, run_main, serve_context
from services.platform.settings import Settings
from services.routing.bootstrap import bootstrap
from services.routing.handlers import ENTRY, QUEUE, RoutingService

log = logging.getLogger("services.routing")

RoutingProcess = ServiceProcess[RoutingService]


def start(settings: Settings, stop: threading.Event | None = None) -> RoutingProcess:
    """Rebuild queues, entries and seats, then serve gRPC, react to intake and agents, fire timers."""
    process = serve_context(settings, bootstrap(settings, kafka_adapters(settings)), stop)
    store = process.store
    log.info(
        "routing: %d queues and %d open entries rebuilt from %d events",
        sum(1 for _ in store.states(QUEUE)),
        sum(1 for _, entry in store.states(ENTRY) if entry.open),
        store.replayed_events,
    )
    return process


if __name__ == "__main__":
    run_main("routing", start)
