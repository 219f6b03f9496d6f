"""Each service as its own process: checks Kafka, serves health over gRPC, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.platform.settings import PROJECT_ROOT
from tests.support.identity import anonymous_channel

SERVING = re.compile(r"serving on \S+ \(port (\d+)\)")
START_DEADLINE_S = 60
EXIT_DEADLINE_S = 60


class ServiceProcess:
    """A service started with ``python -m``; its merged stdout and stderr are collected line by line."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._unread: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._unread.put(line)
        self._unread.put(None)

    def wait_for_line(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._unread.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"process exited before printing {pattern.pattern!r}:\n{self.output}")
            if match := pattern.search(line):
                return match
        raise AssertionError(f"no line matching {pattern.pattern!r} within {timeout_s} s:\n{self.output}")

    def wait(self, timeout_s: float) -> int:
        """The exit code, once the process has ended and all its output is collected."""
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout_s)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def start_service() -> Iterator[Callable[[str, dict[str, str]], ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(module: str, env: dict[str, str]) -> ServiceProcess:
        service = ServiceProcess(module, env)
        started.append(service)
        return service

    yield start
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()


def _health(port: int) -> int:
    with anonymous_channel(f"127.0.0.1:{port}") as channel:  # health needs no token
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10, wait_for_ready=True).status


SERVICES = [
    "services.intake.main",
    "services.routing.main",
    "services.agents.main",
    "services.kpi.main",
    "services.tickets.main",
    "services.approvals.main",
]


@pytest.mark.parametrize("module", SERVICES)
def test_a_service_serves_health_and_exits_cleanly_on_sigterm(kafka_broker, start_service, module, tmp_path):
    service = start_service(
        module,
        {
            "CC_GRPC__ADDRESS": "127.0.0.1:0",
            "CC_CLICKHOUSE__DATA_DIR": str(tmp_path / "clickhouse"),
            "CC_HTTP__ADDRESS": "127.0.0.1:0",
            **kafka_broker.environment(module.split(".")[1]),
            "CC_TELEMETRY__EXPORTER": "none",
            "CC_INSTANCE_ID": f"process-test-{uuid.uuid4().hex[:6]}",
        },
    )
    port = int(service.wait_for_line(SERVING, START_DEADLINE_S).group(1))

    assert _health(port) == health_pb2.HealthCheckResponse.SERVING

    service.process.send_signal(signal.SIGTERM)
    assert service.wait(EXIT_DEADLINE_S) == 0, service.output
    assert re.search(r"\w+ stopped", service.output), service.output


@pytest.mark.parametrize("module", SERVICES)
def test_a_service_refuses_to_start_when_kafka_is_unreachable(free_port, start_service, module):
    nowhere = f"127.0.0.1:{free_port()}"
    service = start_service(
        module,
        {
            "CC_GRPC__ADDRESS": "127.0.0.1:0",
            "CC_HTTP__ADDRESS": "127.0.0.1:0",
            "CC_KAFKA__BOOTSTRAP_SERVERS": nowhere,
        },
    )

    assert service.wait(EXIT_DEADLINE_S) == 1, service.output
    assert f"Kafka is not reachable at {nowhere}" in service.output
    assert "serving on" not in service.output
