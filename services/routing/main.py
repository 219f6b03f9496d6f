"""Composition root of the routing service: settings in; store, reactions, timers and gRPC out."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from callcenter.routing.v1 import service_pb2, service_pb2_grpc

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


@dataclass
class RoutingProcess:
    """Everything the routing service runs, started and stopped together."""

    store: EventStore
    routing: RoutingService
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


def start(settings: Settings, stop: threading.Event | None = None) -> RoutingProcess:
    """Rebuild queues, entries and seats, then serve gRPC, react to intake and agents, fire timers."""
    stop = stop or threading.Event()

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
    threads = [
        threading.Thread(target=runner.run, args=(stop,), name="routing-reactions", daemon=True),
        threading.Thread(target=scheduler.run, args=(stop,), name="routing-timers", daemon=True),
    ]
    for thread in threads:
        thread.start()
    log.info(
        "routing serving on %s (port %d): %d queues, %d open entries rebuilt from %d events",
        settings.grpc.address,
        server.port,
        sum(1 for _ in store.states(QUEUE)),
        sum(1 for _, entry in store.states(ENTRY) if entry.open),
        store.replayed_events,
    )
    return RoutingProcess(store, routing, runner, scheduler, server, stop, threads)


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
        log.error("routing cannot start: %s", error)
        return 1
    telemetry = setup_telemetry(settings.telemetry, "routing", settings.instance_id)
    process = start(settings, stop)
    try:
        serve(process.server, settings.grpc.grace_period_s, stop=stop)
    finally:
        process.close(settings.grpc.grace_period_s)
        telemetry.shutdown()
    log.info("routing stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
