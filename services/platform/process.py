"""One service process: its store, background threads and gRPC server started and stopped together,
and the ``main`` every service shares (preflight checks, telemetry, serve until SIGTERM or SIGINT)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, Generic, TypeVar

from services.platform.consumer import BatchHandler, ConsumerRunner, Handler
from services.platform.envelope import EventRegistry
from services.platform.eventstore import AggregateKind, EventStore
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

T = TypeVar("T")


@dataclass
class ServiceProcess(Generic[T]):
    """A started service: ``service`` is its service layer, for tests and composition."""

    name: str
    store: EventStore
    service: T
    server: RunningServer
    stop: threading.Event
    threads: list[threading.Thread] = field(default_factory=list)
    # Other things to stop before the store closes (an HTTP server), in order.
    closers: list[Callable[[], None]] = field(default_factory=list)
    # The port of the service's HTTP API, when it has one.
    http_port: int | None = None

    def run_in_background(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self.stop,), name=f"{self.name}-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self, grace_s: float) -> None:
        """Stop taking requests, let in-flight ones finish, stop the threads, then the store's writer."""
        self.stop.set()
        self.server.stop(grace_s)
        for closer in self.closers:
            closer()
        for thread in self.threads:
            thread.join(grace_s)
        self.store.close()


Start = Callable[[Settings, threading.Event], ServiceProcess]


def wall_clock() -> datetime:
    return datetime.now(UTC)


def open_store(
    settings: Settings,
    context: str,
    topics: tuple[str, str] | None,
    registry: EventRegistry,
    kinds: Sequence[AggregateKind[Any]],
    *,
    forget_closed: bool = False,
) -> EventStore:
    """A context's store over its (events, snapshots) topics, written as ``<context>-<instance id>``.

    ``topics`` None for a context that keeps only tables (changelogs) and appends no events of its own.
    ``forget_closed`` for contexts with an aggregate per contact, whose closed ones must not pile up.
    """
    events_topic, snapshots_topic = topics or (None, None)
    log = KafkaEventLog(settings.kafka, events_topic, snapshots_topic, f"{context}-{settings.instance_id}")
    return EventStore(
        log,
        registry,
        kinds,
        clock=wall_clock,
        snapshot_every=settings.store.snapshot_every if topics else 0,
        forget_closed_after=settings.store.forget_closed_after if forget_closed else None,
    )


def reactions(
    settings: Settings,
    context: str,
    topics: Sequence[str],
    store: EventStore,
    handler: Handler,
    after_batch: BatchHandler | None = None,
) -> ConsumerRunner:
    """The context's consumer-group member over other contexts' topics, exactly once through its store."""
    source = KafkaSource(settings.kafka, context, topics)
    return ConsumerRunner(context, source, store, store.registry, handler, after_batch=after_batch)


def grpc_server(
    settings: Settings, grpc_module: ModuleType, service_module: ModuleType, servicer: object
) -> RunningServer:
    """Serve one servicer of a generated ``*_pb2_grpc`` module, with health, reflection and tracing."""
    [service] = service_module.DESCRIPTOR.services_by_name.values()
    registration = ServiceRegistration(
        getattr(grpc_module, f"add_{service.name}Servicer_to_server"), servicer, service.full_name
    )
    return create_server(
        settings.grpc.address,
        [registration],
        max_workers=settings.grpc.max_workers,
        interceptors=server_interceptors(),
    )


def run_main(name: str, start: Start) -> int:
    """A service's ``main``: check the addresses and the broker, start, serve until told to stop.

    Returns the process exit code: 1 when it cannot start, naming why; 0 after a clean stop.
    """
    stop = stop_on_signals()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger(f"services.{name}")
    settings = Settings()
    try:
        settings.require_cluster_addresses()
        require_kafka(settings.kafka)
    except (ValueError, KafkaUnreachable) as error:
        log.error("%s cannot start: %s", name, error)
        return 1
    telemetry = setup_telemetry(settings.telemetry, name, settings.instance_id)
    process = start(settings, stop)
    log.info("%s serving on %s (port %d)", name, settings.grpc.address, process.server.port)
    try:
        serve(process.server, settings.grpc.grace_period_s, stop=stop)
    finally:
        process.close(settings.grpc.grace_period_s)
        telemetry.shutdown()
    log.info("%s stopped", name)
    return 0
