"""One service process: its store, background threads and gRPC server started and stopped together,
and the ``main`` every service shares (preflight checks, telemetry, serve until SIGTERM or SIGINT)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from services.platform.eventstore import EventStore
from services.platform.grpc_server import RunningServer, serve, stop_on_signals
from services.platform.preflight import KafkaUnreachable, require_kafka
from services.platform.settings import Settings
from services.platform.telemetry import setup_telemetry

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
