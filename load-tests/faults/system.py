"""The system under fault: a broker, the ClickHouse stand-in and the four services, all processes of
this run, on loopback ports of their own, so that any of them can be killed, paused or restarted.

Everything lives under one folder (``.data/chaos`` by default): the broker's data, the stand-in's
engine, the services' logs and writer claims. The services are started exactly as ``make run``
starts them (``services.launcher``), with the KPI service in server mode over the stand-in, whose
``contact_facts`` the fact checks read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import clickhouse_connect
from grpc_health.v1 import health_pb2

from services import launcher
from services.platform import broker
from services.platform.settings import PROJECT_ROOT, BrokerSettings, KafkaSettings
from services.platform.topics import ensure_topics, load_topic_specs

STANDIN = PROJECT_ROOT / "tests" / "support" / "clickhouse_http_standin.py"
SERVING = health_pb2.HealthCheckResponse.SERVING
NAMES = ("intake", "routing", "agents", "kpi")


@dataclass
class System:
    root: Path
    broker_port: int = 29192
    standin_port: int = 28123
    port_offset: int = 300
    running: dict[str, launcher.Running] = field(default_factory=dict)
    _standin: subprocess.Popen[bytes] | None = None

    @property
    def broker(self) -> BrokerSettings:
        return BrokerSettings(
            port=self.broker_port, controller_port=self.broker_port + 1, data_dir=self.root / "kafka"
        )

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=broker.bootstrap_servers(self.broker))

    @property
    def clickhouse_url(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"

    def address(self, name: str) -> str:
        return launcher.addresses(self.port_offset)[name]

    def environment(self, **extra: str) -> dict[str, str]:
        return {
            "CC_BROKER__PORT": str(self.broker_port),
            "CC_BROKER__CONTROLLER_PORT": str(self.broker_port + 1),
            "CC_CLICKHOUSE__URL": self.clickhouse_url,
            "CC_RUN_DIR": str(self.root / "run"),
            "CC_STORE__FORGET_CLOSED_AFTER": "PT600S",
            **extra,
        }

    # The whole system ---------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_broker()
        ensure_topics(self.kafka.client_config(), load_topic_specs())
        self.start_standin()
        for item in launcher.start_all(self.environment(), self.root / "logs", self.port_offset):
            self.running[item.service.name] = item
        launcher.wait_healthy(list(self.running.values()), timeout_s=120)

    def stop(self) -> None:
        launcher.stop_all(list(self.running.values()))
        self.running.clear()
        self.stop_standin()
        if broker.broker_pid(self.broker) is not None:
            broker.stop(self.broker)

    # The broker ---------------------------------------------------------------------------------

    def start_broker(self) -> float:
        """Start the broker (on its data as it is) and wait until it answers; returns when it did."""
        broker.start(self.broker)
        broker.wait_ready(self.broker, timeout_s=120)
        return time.monotonic()

    def kill_broker(self) -> None:
        pid = broker.broker_pid(self.broker)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            deadline = time.monotonic() + 10
            while broker._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    # The ClickHouse stand-in --------------------------------------------------------------------

    def start_standin(self) -> None:
        folder = self.root / "clickhouse"
        folder.mkdir(parents=True, exist_ok=True)
        port_file = folder / "port"
        port_file.unlink(missing_ok=True)
        with (folder / "standin.log").open("ab") as log:
            self._standin = subprocess.Popen(
                [
                    sys.executable,
                    str(STANDIN),
                    "--data-dir",
                    str(folder / "engine"),
                    "--port-file",
                    str(port_file),
                    "--port",
                    str(self.standin_port),
                    "--faults",
                    str(folder / "faults.json"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.clickhouse_url}/ping", timeout=1) as response,
            ):
                if response.read() == b"Ok.\n":
                    return
            time.sleep(0.1)
        raise TimeoutError("the ClickHouse stand-in did not answer /ping")

    def stop_standin(self) -> None:
        if self._standin is not None and self._standin.poll() is None:
            self._standin.send_signal(signal.SIGTERM)
            try:
                self._standin.wait(15)
            except subprocess.TimeoutExpired:
                self._standin.kill()
                self._standin.wait()
        self._standin = None

    def standin_faults(self, text: str) -> None:
        """Tell the stand-in what to do wrong next (its --faults file): "" to behave."""
        path = self.root / "clickhouse" / "faults.json"
        partial = path.with_suffix(".partial")
        partial.write_text(text or "{}")
        os.replace(partial, path)

    @contextlib.contextmanager
    def clickhouse(self) -> Iterator[clickhouse_connect.driver.Client]:
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=self.standin_port, database="callcenter", connect_timeout=10
        )
        try:
            yield client
        finally:
            client.close()

    # The services -------------------------------------------------------------------------------

    def pid(self, name: str) -> int:
        return self.running[name].process.pid

    def kill(self, name: str) -> None:
        item = self.running[name]
        item.process.kill()
        item.process.wait()

    def pause(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGCONT)

    def restart(self, name: str, **extra_env: str) -> None:
        """Start a service again (after it was killed or stopped), with some settings of its own."""
        item = self.running[name]
        if item.process.poll() is None:
            item.process.send_signal(signal.SIGTERM)
            item.process.wait(30)
        item.env = {**self.environment(**extra_env), **item.service.environment()}
        item.restart()

    def exited(self, name: str) -> int | None:
        return self.running[name].process.poll()

    def serving(self, name: str) -> bool:
        return launcher.health_of(self.address(name), timeout_s=0.5) == SERVING

    def wait_serving(self, name: str, timeout_s: float = 120.0) -> float:
        """Wait until a service says SERVING; returns the moment it did (time.monotonic)."""
        deadline = time.monotonic() + timeout_s
        while not self.serving(name):
            if self.exited(name) is not None:
                raise RuntimeError(
                    f"{name} exited with {self.exited(name)}; see {self.running[name].log_path}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not serving after {timeout_s:.0f} s")
            time.sleep(0.05)
        return time.monotonic()

    def log_of(self, name: str) -> str:
        return self.running[name].log_path.read_text(errors="replace")
