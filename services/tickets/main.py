"""The tickets service's entry point: its context (bootstrap.py) over Kafka, plus the HTTP API for
gateways and departments, served until SIGTERM."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from services.platform.calendars import notices
from services.platform.http import serve_with_http
from services.platform.identity import TokenVerifier
from services.platform.process import ServiceProcess, StartRefused, kafka_adapters, run_main, serve_context
from services.platform.settings import Settings
from services.platform.yamlconfig import ConfigError
from services.tickets.bootstrap import bootstrap
from services.tickets.handlers import KIND, TicketsService
from services.tickets.http_api import create_app
from services.tickets.policies import Rules, load_rules

log = logging.getLogger("services.tickets")

TicketsProcess = ServiceProcess[TicketsService]
# How long before a calendar's last covered day the service starts warning of it.
CALENDAR_NOTICE = timedelta(days=60)


def start(settings: Settings, stop: threading.Event | None = None) -> TicketsProcess:
    """Load the configuration, rebuild the tickets from their topic, then serve gRPC and HTTP, react,
    publish, time. The HTTP port is bound first, so a taken one is refused before the replay."""
    try:
        rules = load_rules(settings.tickets.config_dir, settings.tickets.calendars_dir)
    except ConfigError as error:
        raise StartRefused(f"tickets cannot start: {error}") from None
    _warn_of_calendars_ending(rules)
    process = serve_with_http(
        settings,
        "tickets",
        lambda: serve_context(settings, bootstrap(settings, kafka_adapters(settings), rules), stop),
        lambda served: http_app(served, settings),
    )
    store = process.store
    log.info(
        "tickets: %d rebuilt from %d events; HTTP for gateways and departments on port %d",
        sum(1 for _ in store.states(KIND)),
        store.replayed_events,
        process.http_port,
    )
    return process


def http_app(process: TicketsProcess, settings: Settings) -> FastAPI:
    """The HTTP API over the process's service layer, checking tokens as its gRPC server does."""
    return create_app(process.service, TokenVerifier(settings.auth), settings.privacy)


def _warn_of_calendars_ending(rules: Rules, within: timedelta = CALENDAR_NOTICE) -> None:
    """Deadlines past a calendar's last day are refused, and those in a provisional year may move: say so
    while there is time to add the next version to deploy/calendars/."""
    for notice in notices(rules.calendars.values(), datetime.now(UTC).date(), within):
        log.warning("%s (deploy/calendars/)", notice)


if __name__ == "__main__":
    run_main("tickets", start)
