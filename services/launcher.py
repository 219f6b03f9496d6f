"""Local mode: every service as its own process on fixed loopback ports, started and stopped together.

``python -m services.launcher`` starts them against the broker already running (``make kafka-up``),
waits until each answers its gRPC health check, and stops them all (SIGTERM, then SIGKILL after a
grace period) when it is told to stop or when one of them dies. Their logs go to ``.data/logs``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from services.platform.settings import DEFAULT_DATA_DIR, PROJECT_ROOT

HOST = "127.0.0.1"


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


SERVICES = (
    LocalService("intake", "services.intake.main", 50051, http_port=8080),
    LocalService("routing", "services.routing.main", 50052),
    LocalService("agents", "services.agents.main", 50053),
    LocalService("kpi", "services.kpi.main", 50054),
)


def addresses() -> dict[str, str]:
    """Where each local service's gRPC API answers."""
    return {service.name: service.grpc_address for service in SERVICES}


@dataclass
class Running:
    service: LocalService
    process: subprocess.Popen[bytes]
    log_path: Path


def start_all(
    extra_env: Mapping[str, str] | None = None, log_dir: Path = DEFAULT_DATA_DIR / "logs"
) -> list[Running]:
    log_dir.mkdir(parents=True, exist_ok=True)
    running = []
    for service in SERVICES:
        log_path = log_dir / f"{service.name}.log"
        env = {**os.environ, **(extra_env or {}), **service.environment()}
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", service.module],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        running.append(Running(service, process, log_path))
    return running


def wait_healthy(running: list[Running], timeout_s: float = 60.0) -> None:
    """Block until every service reports SERVING; raise naming the first that died or stayed silent."""
    deadline = time.monotonic() + timeout_s
    for item in running:
        with grpc.insecure_channel(item.service.grpc_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if item.process.poll() is not None:
                    raise RuntimeError(
                        f"{item.service.name} exited with {item.process.returncode}; see {item.log_path}"
                    )
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{item.service.name} not serving after {timeout_s:.0f} s; see {item.log_path}"
                    )
                time.sleep(0.2)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    console = Console()
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
        console.print("Ctrl-C stops every service.")
        while not stop.wait(0.5):
            for item in running:
                if item.process.poll() is not None:
                    name, code = item.service.name, item.process.returncode
                    console.print(f"[red]{name} exited with {code}; see {item.log_path}")
                    return 1
        return 0
    finally:
        stop_all(running)


if __name__ == "__main__":
    sys.exit(main())
