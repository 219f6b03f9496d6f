"""The intake service's entry point: its context (bootstrap.py) over Kafka, plus the gateways' HTTP API."""

from __future__ import annotations

import logging
import threading

from services.intake.bootstrap import bootstrap
from services.intake.handlers import KIND, IntakeService
from services.intake.http_api import create_app
from services.platform.http import serve_with_http
from services.platform.identity import TokenVerifier
from services.platform.process import ServiceProcess, kafka_adapters, run_main, serve_context
from services.platform.settings import Settings

log = logging.getLogger("services.intake")

IntakeProcess = ServiceProcess[IntakeService]


def start(settings: Settings, stop: threading.Event | None = None) -> IntakeProcess:
    """Rebuild the open contacts from their topic, then serve gRPC and HTTP and react to routing.

    The HTTP port is bound first, so a taken one is refused before the replay, not after it.
    """
    process = serve_with_http(
        settings,
        "intake",
        lambda: serve_context(settings, bootstrap(settings, kafka_adapters(settings)), stop),
        lambda served: create_app(served.service, TokenVerifier(settings.auth)),
    )
    log.info(
        "intake: %d contacts rebuilt from %d events; HTTP for gateways on port %d",
        sum(1 for _ in process.store.states(KIND)),
        process.store.replayed_events,
        process.http_port,
    )
    return process


if __name__ == "__main__":
    run_main("intake", start)
