"""The tickets service's entry point: its context (bootstrap.py) over Kafka, served until SIGTERM."""

from __future__ import annotations

import logging
import threading

from services.platform.process import ServiceProcess, StartRefused, kafka_adapters, run_main, serve_context
from services.platform.settings import Settings
from services.platform.yamlconfig import ConfigError
from services.tickets.bootstrap import bootstrap
from services.tickets.handlers import KIND, TicketsService
from services.tickets.policies import load_rules

log = logging.getLogger("services.tickets")

TicketsProcess = ServiceProcess[TicketsService]


def start(settings: Settings, stop: threading.Event | None = None) -> TicketsProcess:
    """Load the configuration, rebuild the tickets from their topic, then serve, react, publish, time."""
    try:
        rules = load_rules(settings.tickets.config_dir, settings.tickets.calendars_dir)
    except ConfigError as error:
        raise StartRefused(f"tickets cannot start: {error}") from None
    process = serve_context(settings, bootstrap(settings, kafka_adapters(settings), rules), stop)
    store = process.store
    log.info("tickets: %d rebuilt from %d events", sum(1 for _ in store.states(KIND)), store.replayed_events)
    return process


if __name__ == "__main__":
    run_main("tickets", start)
