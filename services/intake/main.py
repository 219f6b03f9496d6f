"""Composition root of the intake service: settings in; store, reactions, gRPC and the gateways' HTTP out."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time

import uvicorn
from callcenter.intake.v1 import service_pb2, service_pb2_grpc
from fastapi import FastAPI

from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import (
    EVENTS_TOPIC,
    KIND,
    REACTS_TO,
    SNAPSHOTS_TOPIC,
    IntakeService,
    contact_kind,
    registry,
)
from services.intake.http_api import create_app
from services.platform.process import ServiceProcess, grpc_server, open_store, reactions, run_main, wall_clock
from services.platform.settings import Settings

log = logging.getLogger("services.intake")

IntakeProcess = ServiceProcess[IntakeService]

HTTP_START_TIMEOUT_S = 30.0
HTTP_STOP_TIMEOUT_S = 10.0


def start(settings: Settings, stop: threading.Event | None = None) -> IntakeProcess:
    """Rebuild the open contacts from their topic, then serve gRPC and HTTP and react to routing."""
    store = open_store(
        settings, "intake", (EVENTS_TOPIC, SNAPSHOTS_TOPIC), registry(), [contact_kind()], forget_closed=True
    )
    intake = IntakeService(store, settings.privacy, settings.intake, wall_clock)
    store.start()
    server = grpc_server(settings, service_pb2_grpc, service_pb2, IntakeServicer(intake))
    process = ServiceProcess("intake", store, intake, server, stop or threading.Event())
    process.run_in_background("reactions", reactions(settings, "intake", REACTS_TO, store, intake.react).run)
    try:
        process.http_port = _serve_http(create_app(intake), settings.http.address, process)
    except Exception:
        process.close(0)
        raise
    log.info(
        "intake: %d contacts rebuilt from %d events; HTTP for gateways on port %d",
        sum(1 for _ in store.states(KIND)),
        store.replayed_events,
        process.http_port,
    )
    return process


def _serve_http(app: FastAPI, address: str, process: IntakeProcess) -> int:
    """Run uvicorn on a thread of the process, stopped with it; returns the port bound (0 picks one)."""
    host, _, port = address.rpartition(":")
    server = uvicorn.Server(uvicorn.Config(app, host=host.strip("[]"), port=int(port), log_level="warning"))

    def run() -> None:
        # uvicorn logs why it cannot start and then raises SystemExit; the wait below reports it.
        with contextlib.suppress(SystemExit):
            server.run()

    thread = threading.Thread(target=run, name="intake-http", daemon=True)
    thread.start()
    waiting, deadline = threading.Event(), time.monotonic() + HTTP_START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        waiting.wait(0.02)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"intake's HTTP API did not start on {address}")

    def stop_http() -> None:
        server.should_exit = True
        thread.join(HTTP_STOP_TIMEOUT_S)

    process.closers.append(stop_http)
    return server.servers[0].sockets[0].getsockname()[1]


if __name__ == "__main__":
    sys.exit(run_main("intake", start))
