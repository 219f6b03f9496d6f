"""The intake service's entry point: its context (bootstrap.py) over Kafka, plus the gateways' HTTP API."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from services.intake.bootstrap import bootstrap
from services.intake.handlers import KIND, IntakeService
from services.intake.http_api import create_app
from services.platform.identity import TokenVerifier
from services.platform.process import (
    ServiceProcess,
    StartRefused,
    kafka_adapters,
    run_main,
    serve_context,
)
from services.platform.settings import Settings, TlsSettings

log = logging.getLogger("services.intake")

IntakeProcess = ServiceProcess[IntakeService]

HTTP_START_TIMEOUT_S = 30.0
HTTP_STOP_TIMEOUT_S = 10.0


def start(settings: Settings, stop: threading.Event | None = None) -> IntakeProcess:
    """Rebuild the open contacts from their topic, then serve gRPC and HTTP and react to routing.

    The HTTP port is bound first, so a taken one is refused before the replay, not after it.
    """
    http_socket = _bind(settings.http.address)
    try:
        process = serve_context(settings, bootstrap(settings, kafka_adapters(settings)), stop)
    except BaseException:
        http_socket.close()
        raise
    try:
        app = create_app(process.service, TokenVerifier(settings.auth))
        process.http_port = _serve_http(app, http_socket, process, settings.tls)
    except Exception:
        process.close(0)
        raise
    log.info(
        "intake: %d contacts rebuilt from %d events; HTTP for gateways on port %d",
        sum(1 for _ in process.store.states(KIND)),
        process.store.replayed_events,
        process.http_port,
    )
    return process


def _bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    bound = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        bound.bind((host.strip("[]"), int(port)))
    except OSError as error:
        bound.close()
        raise StartRefused(
            f"intake's HTTP API cannot serve on {address}: {error.strerror}; another intake may be running "
            f"(see .data/run/intake-*.lock), or set CC_HTTP__ADDRESS"
        ) from None
    return bound


def _serve_http(app: FastAPI, bound: socket.socket, process: IntakeProcess, tls: TlsSettings) -> int:
    """Run uvicorn on a thread of the process, on the socket bound for it, over TLS with the service's
    certificate (unless ``tls.plaintext``), stopped with the process; returns its port."""
    certificate = {} if tls.plaintext else {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **certificate))

    def run() -> None:
        # uvicorn logs why it cannot start and then raises SystemExit; the wait below reports it.
        with contextlib.suppress(SystemExit):
            server.run(sockets=[bound])

    thread = threading.Thread(target=run, name="intake-http", daemon=True)
    thread.start()
    waiting, deadline = threading.Event(), time.monotonic() + HTTP_START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        waiting.wait(0.02)
    if not server.started:
        server.should_exit = True
        raise StartRefused("intake's HTTP API did not start (see the line above)")

    def stop_http() -> None:
        server.should_exit = True
        thread.join(HTTP_STOP_TIMEOUT_S)

    process.closers.append(stop_http)
    return bound.getsockname()[1]


if __name__ == "__main__":
    run_main("intake", start)
