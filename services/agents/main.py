"""The agents service's entry point: its context (bootstrap.py) over Kafka, served until SIGTERM."""

from __future__ import annotations

import logging
import threading

from services.agents.bootstrap import bootstrap
from services.agents.handlers import KIND, AgentsService
from services.platform.process import ServiceProcess, kafka_adapters, run_main, serve_context
from services.platform.settings import Settings

log = logging.getLogger("services.agents")

AgentsProcess = ServiceProcess[AgentsService]


def start(settings: Settings, stop: threading.Event | None = None) -> AgentsProcess:
    """Rebuild the agents from their topic, then serve gRPC, react to routing and intake, fire timers."""
    process = serve_context(settings, bootstrap(settings, kafka_adapters(settings)), stop)
    store = process.store
    log.info("agents: %d rebuilt from %d events", sum(1 for _ in store.states(KIND)), store.replayed_events)
    return process


if __name__ == "__main__":
    run_main("agents", start)
