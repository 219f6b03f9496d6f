"""Local mode: every service as its own process on fixed loopback ports, supervised and stopped together.

``python -m services.launcher`` starts them against the broker already running (``make kafka-up``),
waits until each answers its gRPC health check, then supervises them: a service that exits is
started again (one that was fenced by another instance, or crashed), one that stops serving is
reported, and Ctrl-C (or SIGTERM) stops them all (SIGTERM, then SIGKILL after a grace period).
Their logs go to ``.data/logs``. When the services already run, it says so and starts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from rich.console import Console
from rich.table import Table

from services.platform import probe
from services.platform.identity import ensure_local, transport_credentials
from services.platform.process import EXIT_REFUSED
from services.platform.settings import DEFAULT_DATA_DIR, PROJECT_ROOT, Settings

HOST = "127.0.0.1"
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)
NOT_SERVING_REPORT_S = 5.0


@dataclass(frozen=True)
class LocalService:
    name: str
    module: str
    grpc_port: int
    http_port: int | None = None

    @property
    def grpc_address(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def environment(self) -> dict[str, str]:
        env = {
            "CC_SERVICE_NAME": self.name,
            "CC_GRPC__ADDRESS": self.grpc_address,
        }
        if self.http_port is not None:
            env["CC_HTTP__ADDRESS"] = f"{HOST}:{self.http_port}"
        return env

    def moved(self, offset: int) -> LocalService:
        http = self.http_port + offset if self.http_port is not None else None
        return LocalService(self.name, self.module, self.grpc_port + offset, http)


SERVICES = (
    LocalService("intake", "services.intake.main", 50051, http_port=8080),
    LocalService("routing", "services.routing.main", 50052),
    LocalService("agents", "services.agents.main", 50053),
    LocalService("kpi", "services.kpi.main", 50054),
    LocalService("tickets", "services.tickets.main", 50055, http_port=8085),
    LocalService("approvals", "services.approvals.main", 50056, http_port=8086),
)


def services(port_offset: int = 0) -> tuple[LocalService, ...]:
    return tuple(service.moved(port_offset) for service in SERVICES)


def addresses(port_offset: int = 0) -> dict[str, str]:
    """Where each local service's gRPC API answers."""
    return {service.name: service.grpc_address for service in services(port_offset)}


@dataclass
class Running:
    service: LocalService
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    not_serving_since: float | None = None

    def restart(self) -> None:
        self.process = _spawn(self.service, self.env, self.log_path)
        self.restarts += 1


def _spawn(service: LocalService, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", service.module],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def start_all(
    extra_env: Mapping[str, str] | None = None,
    log_dir: Path = DEFAULT_DATA_DIR / "logs",
    port_offset: int = 0,
    names: tuple[str, ...] = (),
) -> list[Running]:
    log_dir.mkdir(parents=True, exist_ok=True)
    # Once, before any service starts: they all serve the one local CA's certificate and trust one key.
    ensure_local(Settings())
    running = []
    for service in services(port_offset):
        if names and service.name not in names:
            continue
        log_path = log_dir / f"{service.name}.log"
        env = {**(extra_env or {}), **service.environment()}
        running.append(Running(service, _spawn(service, env, log_path), log_path, env))
    return running


@functools.cache
def _transport() -> grpc.ChannelCredentials:
    return transport_credentials(Settings().tls)


def health_of(address: str, timeout_s: float = 1.0) -> int | None:
    """The health status a local service reports, or None when nothing answers."""
    return probe.health_of(address, _transport(), timeout_s)


def wait_healthy(running: list[Running], timeout_s: float = 60.0) -> None:
    """Block until every service reports SERVING; raise naming the first that died or stayed silent."""
    deadline = time.monotonic() + timeout_s
    for item in running:
        while True:
            if item.process.poll() is not None:
                raise RuntimeError(
                    f"{item.service.name} exited with {item.process.returncode}; see {item.log_path}"
                    + _last_lines(item.log_path)
                )
            if health_of(item.service.grpc_address) == health_pb2.HealthCheckResponse.SERVING:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{item.service.name} not serving after {timeout_s:.0f} s; see {item.log_path}"
                )
            time.sleep(0.1)


def stop_all(running: list[Running], grace_s: float = 15.0) -> None:
    for item in running:
        if item.process.poll() is None:
            item.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for item in running:
        try:
            item.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            item.process.kill()
            item.process.wait()


def already_running(port_offset: int = 0, run_dir: Path | None = None) -> dict[str, str]:
    """The local services that answer their health check now, with what their claim says of them."""
    run_dir = run_dir or Settings().run_dir
    found = {}
    for service in services(port_offset):
        if health_of(service.grpc_address, timeout_s=0.5) is None:
            continue
        claim = run_dir / f"{service.name}-0.lock"
        facts: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            facts = json.loads(claim.read_text() or "{}")
        found[service.name] = f"pid {facts['pid']}" if "pid" in facts else service.grpc_address
    return found


def supervise(running: list[Running], stop: threading.Event, console: Console) -> int:
    """Keep the services up until ``stop``: start again one that exits, report one that stops serving.

    Returns 1 when a service cannot start at all (it refuses, naming why), 0 when told to stop.
    """
    while not stop.wait(0.5):
        for item in running:
            code = item.process.poll()
            name = item.service.name
            if code is not None:
                if code == EXIT_REFUSED and item.restarts == 0:
                    console.print(
                        f"[red]{name} refused to start; see {item.log_path}{_last_lines(item.log_path)}"
                    )
                    return 1
                pause = RESTART_BACKOFF_S[min(item.restarts, len(RESTART_BACKOFF_S) - 1)]
                console.print(f"[yellow]{name} exited with {code}; starting it again in {pause:g} s")
                if stop.wait(pause):
                    return 0
                item.restart()
                continue
            serving = health_of(item.service.grpc_address) == health_pb2.HealthCheckResponse.SERVING
            now = time.monotonic()
            if serving:
                if (
                    item.not_serving_since is not None
                    and now - item.not_serving_since >= NOT_SERVING_REPORT_S
                ):
                    console.print(f"[green]{name} serves again")
                item.not_serving_since = None
            elif item.not_serving_since is None:
                item.not_serving_since = now
            elif now - item.not_serving_since >= NOT_SERVING_REPORT_S and item.not_serving_since > 0:
                console.print(f"[yellow]{name} is not serving; see {item.log_path}")
                item.not_serving_since = -now  # reported: say so again only once it serves
    return 0


def _last_lines(path: Path, count: int = 3) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()[-count:]
        return "".join(f"\n  {line}" for line in lines)
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    console = Console()
    found = already_running()
    if found:
        console.print(
            "[yellow]the services already run here: "
            + ", ".join(f"{name} ({holder})" for name, holder in found.items())
            + ". Use them (make demo, the wallboard), or stop them first: Ctrl-C where `make run` runs."
        )
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    running = start_all()
    try:
        wait_healthy(running)
        table = Table(title="contact center, local mode")
        for column in ("service", "gRPC", "HTTP", "pid", "log"):
            table.add_column(column)
        for item in running:
            http = f"{HOST}:{item.service.http_port}" if item.service.http_port else ""
            table.add_row(
                item.service.name, item.service.grpc_address, http, str(item.process.pid), str(item.log_path)
            )
        console.print(table)
        console.print(
            "Next: `make demo` in another terminal runs callers and agents against these services with a "
            "live wallboard (it writes .data/simulator/report.html). Calls need TLS (.data/tls/ca.pem) and a "
            "token: `make token ROLE=supervisor SUBJECT=sv-1` (docs/security.md). Traces: "
            "CC_TELEMETRY__EXPORTER=console "
            "(into the logs above) or otlp. Ctrl-C stops the services; the Kafka broker keeps running "
            "(`make kafka-down` stops it)."
        )
        return supervise(running, stop, console)
    except (RuntimeError, TimeoutError) as error:
        console.print(f"[red]{error}")
        return 1
    finally:
        stop_all(running)


if __name__ == "__main__":
    sys.exit(main())
