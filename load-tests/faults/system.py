"""The system under fault: a broker, the ClickHouse stand-in and the six services, all processes of
this run, on loopback ports of their own, so that any of them can be killed, paused or restarted.

Everything lives under one folder (``.data/chaos`` by default): the broker's data, the stand-in's
engine, the services' logs and writer claims. The services are started exactly as ``make run``
starts them (``services.launcher``), with the KPI service in server mode over the stand-in, whose
``contact_facts`` the fact checks read, and the approvals service on the project's policies and
business calendars (``deploy/approvals``, ``deploy/calendars``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import clickhouse_connect
from grpc_health.v1 import health_pb2

from services import launcher
from services.platform import broker
from services.platform.acls import ensure_access, load_acl_specs
from services.platform.settings import PROJECT_ROOT, BrokerSettings, KafkaSettings, Settings
from services.platform.topics import ensure_topics, load_topic_specs

STANDIN = PROJECT_ROOT / "tests" / "support" / "clickhouse_http_standin.py"
SERVING = health_pb2.HealthCheckResponse.SERVING
NAMES = ("intake", "routing", "agents", "kpi", "tickets", "approvals")
# What the approvals service decides by: every version of its policy, and the calendars of its deadlines.
APPROVAL_POLICIES = PROJECT_ROOT / "deploy" / "approvals"
CALENDARS = PROJECT_ROOT / "deploy" / "calendars"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _free_offset(first: int = 300) -> int:
    """A shift of the launcher's ports (services.launcher) at which every one of them is free."""
    for offset in range(first, first + 5000, 100):
        ports = [s.grpc_port for s in launcher.services(offset)] + [
            s.http_port for s in launcher.services(offset) if s.http_port
        ]
        if all(_port_free(port) for port in ports):
            return offset
    raise RuntimeError("no free set of service ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class System:
    root: Path
    broker_port: int = field(default_factory=_free_port)
    controller_port: int = field(default_factory=_free_port)
    standin_port: int = field(default_factory=_free_port)
    port_offset: int = field(default_factory=_free_offset)
    running: dict[str, launcher.Running] = field(default_factory=dict)
    # With a size, the broker's data lives in a tmpfs of that many MiB (root only): the disk-full fault.
    disk_mb: int | None = None
    _standin: subprocess.Popen[bytes] | None = None
    _mounted: bool = False
    # Like any supervisor (make run's launcher, Kubernetes), the system starts again a service that
    # exits by itself; one a fault killed or stopped is left to the fault. What exited, with its code:
    exits: list[tuple[str, int]] = field(default_factory=list)
    _held: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _supervising: threading.Event = field(default_factory=threading.Event)

    @property
    def broker(self) -> BrokerSettings:
        # Its security mode, CA and passwords as the services' settings see them (CC_BROKER__SECURITY...).
        return Settings().broker.model_copy(
            update={
                "port": self.broker_port,
                "controller_port": self.controller_port,
                "data_dir": self.root / "kafka",
            }
        )

    @property
    def kafka(self) -> KafkaSettings:
        """The admin's: the suite's own reads and writes (each service connects as its own principal)."""
        return broker.client_settings(self.broker)

    @property
    def clickhouse_url(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"

    def address(self, name: str) -> str:
        return launcher.addresses(self.port_offset)[name]

    def environment(self, **extra: str) -> dict[str, str]:
        return {
            "CC_BROKER__PORT": str(self.broker_port),
            "CC_BROKER__CONTROLLER_PORT": str(self.controller_port),
            "CC_CLICKHOUSE__URL": self.clickhouse_url,
            "CC_RUN_DIR": str(self.root / "run"),
            "CC_STORE__FORGET_CLOSED_AFTER": "PT600S",
            "CC_APPROVALS__POLICIES_DIR": str(APPROVAL_POLICIES),
            "CC_APPROVALS__CALENDARS_DIR": str(CALENDARS),
            **extra,
        }

    # The whole system ---------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._mount_disk()
        self.start_broker()
        ensure_topics(self.kafka.client_config(), load_topic_specs())
        if self.broker.secured:
            ensure_access(self.kafka.client_config(), load_acl_specs(), self.broker.credentials_dir)
        self.start_standin()
        for item in launcher.start_all(self.environment(), self.root / "logs", self.port_offset):
            self.running[item.service.name] = item
        launcher.wait_healthy(list(self.running.values()), timeout_s=120)
        self._supervising.set()
        threading.Thread(target=self._supervise, name="system-supervisor", daemon=True).start()

    def _supervise(self) -> None:
        while self._supervising.is_set():
            with self._lock:
                for name, item in self.running.items():
                    code = item.process.poll()
                    if code is not None and name not in self._held:
                        self.exits.append((name, code))
                        item.restart()
            time.sleep(0.5)

    def stop(self) -> None:
        self._supervising.clear()
        with self._lock:
            self._held.update(self.running)
        launcher.stop_all(list(self.running.values()))
        self.running.clear()
        self.stop_standin()
        if broker.broker_pid(self.broker) is not None:
            broker.stop(self.broker)
        if self._mounted:
            subprocess.run(["umount", str(self.broker.data_dir)], check=False)
            self._mounted = False

    # The broker's disk -----------------------------------------------------------------------------

    def _mount_disk(self) -> None:
        if self.disk_mb is None:
            return
        folder = self.broker.data_dir
        folder.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        self._mounted = mounted.returncode == 0
        if not self._mounted:
            self.disk_mb = None  # the disk-full fault says it cannot run

    def fill_disk(self) -> Path:
        """Fill the broker's disk to the last byte; returns the ballast file, whose removal frees it."""
        ballast = self.broker.data_dir / "ballast"
        with ballast.open("wb") as out:
            chunk = b"\0" * (1 << 20)
            with contextlib.suppress(OSError):
                while True:
                    out.write(chunk)
                    out.flush()
        return ballast

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

    def pids(self) -> dict[str, int]:
        """Every process of the system now: the services, the broker and the ClickHouse stand-in."""
        found = {name: self.pid(name) for name in self.running}
        broker_pid = broker.broker_pid(self.broker)
        if broker_pid is not None:
            found["broker"] = broker_pid
        if self._standin is not None:
            found["clickhouse"] = self._standin.pid
        return found

    def kill(self, name: str) -> None:
        with self._lock:
            self._held.add(name)
            item = self.running[name]
            item.process.kill()
            item.process.wait()

    def dump_stacks(self, name: str) -> None:
        """Every thread's stack into the service's log (its SIGUSR1 handler: services.platform.process)."""
        os.kill(self.pid(name), signal.SIGUSR1)
        time.sleep(1.0)

    def pause(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGCONT)

    def stop_service(self, name: str, wait_s: float = 60.0) -> None:
        """SIGTERM, and wait until it ended; left stopped (the supervisor holds off) until restarted."""
        with self._lock:
            self._held.add(name)
        item = self.running[name]
        if item.process.poll() is None:
            item.process.send_signal(signal.SIGTERM)
            item.process.wait(wait_s)

    def restart(self, name: str, held: bool = False, **extra_env: str) -> None:
        """Start a service again (after it was killed or stopped), with some settings of its own;
        ``held``: its next exit is the caller's (a failpoint), not restarted by the supervisor."""
        self.stop_service(name, wait_s=30.0)
        item = self.running[name]
        item.env = {**self.environment(**extra_env), **item.service.environment()}
        item.restart()
        if not held:
            with self._lock:
                self._held.discard(name)

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
