"""The local single-node KRaft broker: Maven Central jars, config, storage, start, readiness, stop.

``python -m services.platform.broker up|down|status`` is what ``make kafka-up`` and ``make kafka-down``
call; the test session fixture uses the same functions with its own data directory and ports.
Everything the broker writes lives under ``BrokerSettings.data_dir``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.platform.settings import PROJECT_ROOT, BrokerSettings, Settings

KAFKA_DEPLOY_DIR = PROJECT_ROOT / "deploy" / "kafka"
LOG4J_CONFIG = KAFKA_DEPLOY_DIR / "log4j2.properties"
STOP_GRACE_S = 30.0
# A broker that fails during start-up logs one of these and then may hang in its shutdown hooks for
# good, so waiting for the process to exit would only ever end at the timeout.
_FATAL_MARKERS = ("Encountered fatal fault", "Exiting Kafka due to fatal exception")
_FAILED_START_GRACE_S = 5.0
_LOG_TAIL_LINES = 40

# Brokers started by this process, so that stop() can reap its own children instead of leaving zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(Exception):
    """The local broker could not be prepared, started or reached; the message says why and what to do."""


@dataclass(frozen=True)
class BrokerFiles:
    """Where one broker's files live under its data directory."""

    data_dir: Path

    def __post_init__(self) -> None:
        # Absolute, because the broker runs with its data directory as working directory.
        object.__setattr__(self, "data_dir", self.data_dir.resolve())

    @property
    def config(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def meta_properties(self) -> Path:
        return self.log_dirs / "meta.properties"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def console_log(self) -> Path:
        return self.logs / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"


@dataclass(frozen=True)
class BrokerStatus:
    """What is known about the configured broker right now."""

    bootstrap_servers: str
    answering: bool
    pid: int | None
    cluster_id: str | None
    data_dir: Path

    def describe(self) -> str:
        state = "answering" if self.answering else "not answering"
        owner = (
            f"pid {self.pid} from {self.data_dir}" if self.pid else f"no broker process from {self.data_dir}"
        )
        cluster = f", cluster id {self.cluster_id}" if self.cluster_id else ""
        return f"Kafka on {self.bootstrap_servers}: {state}; {owner}{cluster}"


def bootstrap_servers(broker: BrokerSettings) -> str:
    return f"{broker.host}:{broker.port}"


def kafka_version(broker: BrokerSettings) -> str | None:
    jars = sorted(broker.libs_dir.glob("kafka_2.13-*.jar"))
    return jars[-1].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else None


def ensure_jars(broker: BrokerSettings) -> bool:
    """Fetch the broker's classpath with Maven unless ``libs_dir`` already holds it; True if fetched.

    ``.complete`` marks a finished copy (the stamp ``make kafka-jars`` also writes), so an interrupted
    download is completed rather than run from.
    """
    complete = broker.libs_dir / ".complete"
    if complete.exists() and kafka_version(broker) is not None:
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"the Kafka jars are missing from {broker.libs_dir} and Maven (mvn) is not on PATH; "
            f"install Maven and run `make kafka-jars` once"
        )
    result = subprocess.run(
        [mvn, "-q", "-B", "package", f"-Dkafka.libs={broker.libs_dir.resolve()}"],
        cwd=KAFKA_DEPLOY_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or kafka_version(broker) is None:
        raise BrokerError(
            f"`mvn package` in {KAFKA_DEPLOY_DIR} did not put the Kafka jars into {broker.libs_dir} "
            f"(exit {result.returncode}):\n{_tail_text(result.stdout + result.stderr)}"
        )
    complete.touch()
    return True


def server_properties(broker: BrokerSettings) -> str:
    files = BrokerFiles(broker.data_dir)
    controller = f"{broker.host}:{broker.controller_port}"
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{controller}",
        "listeners": f"PLAINTEXT://{bootstrap_servers(broker)},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{bootstrap_servers(broker)}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(files.log_dirs),
        # Topics are declared in deploy/kafka/topics.toml; a typo in a topic name should fail, not create.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def write_config(broker: BrokerSettings) -> Path:
    """Write ``server.properties`` for these settings (always, so changed ports take effect)."""
    files = BrokerFiles(broker.data_dir)
    files.logs.mkdir(parents=True, exist_ok=True)
    files.config.write_text(server_properties(broker))
    return files.config


def cluster_id(broker: BrokerSettings) -> str | None:
    """The cluster id the storage was formatted with, read back from ``meta.properties``."""
    meta = BrokerFiles(broker.data_dir).meta_properties
    if not meta.exists():
        return None
    for line in meta.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def new_cluster_id() -> str:
    """A random Kafka ``Uuid`` (base64url of 16 bytes); Kafka refuses ids starting with '-'."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def format_storage(broker: BrokerSettings) -> bool:
    """Format the KRaft log directory once; its meta.properties keeps the cluster id. True if formatted."""
    if cluster_id(broker) is not None:
        return False
    files = BrokerFiles(broker.data_dir)
    config = write_config(broker)
    result = subprocess.run(
        [
            *_java_command(broker),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(config),
            "--ignore-formatted",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerError(
            f"formatting {files.log_dirs} failed (exit {result.returncode}):\n"
            f"{_tail_text(result.stdout + result.stderr)}"
        )
    return True


def start(broker: BrokerSettings) -> int:
    """Launch the broker detached from this process (own session, output to the console log); its pid."""
    files = BrokerFiles(broker.data_dir)
    running = broker_pid(broker)
    if running is not None:
        raise BrokerError(f"a broker from {broker.data_dir} is already running as pid {running}")
    ensure_jars(broker)
    config = write_config(broker)
    format_storage(broker)
    # Truncated per launch: the console log holds this run's JVM output and errors (log4j2.properties).
    with files.console_log.open("wb") as console:
        process = subprocess.Popen(
            [*_java_command(broker), "kafka.Kafka", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            cwd=broker.data_dir,
            start_new_session=True,
        )
    _children[process.pid] = process
    files.pid_file.write_text(f"{process.pid}\n")
    return process.pid


def wait_ready(broker: BrokerSettings, timeout_s: float | None = None) -> float:
    """Block until the broker answers a metadata request; the seconds waited.

    Raises BrokerError with the tail of the broker's logs if its process exits or the time runs out.
    """
    timeout_s = broker.startup_timeout_s if timeout_s is None else timeout_s
    files = BrokerFiles(broker.data_dir)
    started = time.monotonic()
    deadline = started + timeout_s
    pid = broker_pid(broker)
    admin: AdminClient | None = None
    while True:
        if pid is not None and not _alive(pid):
            raise BrokerError(
                f"the broker (pid {pid}) exited before answering on {bootstrap_servers(broker)}\n"
                f"{log_tail(broker)}"
            )
        if pid is not None and _failed_fatally(files.console_log):
            raise BrokerError(
                f"the broker (pid {pid}) failed while starting on {bootstrap_servers(broker)}\n"
                f"{log_tail(broker)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"the broker did not answer on {bootstrap_servers(broker)} within {timeout_s:.0f} s\n"
                f"{log_tail(broker)}"
            )
        # Connecting the admin client only once the port accepts keeps librdkafka from logging
        # "connection refused" for every attempt while the JVM starts.
        if admin is None and _port_open(broker.host, broker.port):
            admin = AdminClient(_quiet_admin_config(bootstrap_servers(broker)))
        if admin is not None and _answers_metadata(admin, min(2.0, remaining)):
            return time.monotonic() - started
        time.sleep(0.05)


def is_running(broker: BrokerSettings, timeout_s: float = 2.0) -> bool:
    """Whether some Kafka broker (ours or not) answers a metadata request on the configured host and port."""
    if not _port_open(broker.host, broker.port):
        return False
    return _answers_metadata(AdminClient(_quiet_admin_config(bootstrap_servers(broker))), timeout_s)


def status(broker: BrokerSettings) -> BrokerStatus:
    return BrokerStatus(
        bootstrap_servers=bootstrap_servers(broker),
        answering=is_running(broker),
        pid=broker_pid(broker),
        cluster_id=cluster_id(broker),
        data_dir=broker.data_dir,
    )


def stop(broker: BrokerSettings, grace_s: float = STOP_GRACE_S) -> int | None:
    """SIGTERM the broker named by the pid file, SIGKILL it after ``grace_s``; the pid stopped, if any.

    Only that pid is signalled, and only if it still is a Kafka broker using this data directory's config.
    """
    files = BrokerFiles(broker.data_dir)
    pid = broker_pid(broker)
    if pid is None:
        files.pid_file.unlink(missing_ok=True)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_exit(pid, grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 10.0)
    _children.pop(pid, None)
    files.pid_file.unlink(missing_ok=True)
    return pid


def broker_pid(broker: BrokerSettings) -> int | None:
    """The pid in the pid file if that process is alive and is the broker of this data directory."""
    files = BrokerFiles(broker.data_dir)
    try:
        pid = int(files.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(pid):
        return None
    if pid in _children:
        # Started by this process: right after the fork its command line is not the broker's yet.
        return pid
    command_line = _command_line(pid)
    if command_line is not None and (
        "kafka.Kafka" not in command_line or str(files.config) not in command_line
    ):
        return None
    return pid


def log_tail(broker: BrokerSettings, lines: int = _LOG_TAIL_LINES) -> str:
    files = BrokerFiles(broker.data_dir)
    parts = []
    for log_file in (files.console_log, files.server_log):
        if log_file.exists() and log_file.stat().st_size:
            parts.append(
                f"--- last lines of {log_file} ---\n{_tail_text(log_file.read_text(errors='replace'), lines)}"
            )
    return "\n".join(parts) or f"(no broker log under {files.logs})"


def _failed_fatally(console_log: Path) -> bool:
    try:
        text = console_log.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return any(marker in text for marker in _FATAL_MARKERS)


def _java_command(broker: BrokerSettings) -> list[str]:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise BrokerError("Java 17 or newer is needed to run the local Kafka broker; `java` was not found")
    files = BrokerFiles(broker.data_dir)
    return [
        java,
        f"-Xmx{broker.heap}",
        # The GC flags of Kafka's own kafka-run-class.sh.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={files.logs}",
        "-cp",
        f"{broker.libs_dir.resolve()}/*",
    ]


def _quiet_admin_config(servers: str) -> dict[str, str | int | bool]:
    return {
        "bootstrap.servers": servers,
        "log_level": 0,
        "log.connection.close": False,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
        "socket.connection.setup.timeout.ms": 1000,
    }


def _answers_metadata(admin: AdminClient, timeout_s: float) -> bool:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def _command_line(pid: int) -> str | None:
    """The process's command line where /proc exists (Linux); None elsewhere, then the pid file is trusted."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _tail_text(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def up(broker: BrokerSettings) -> str:
    """Start the broker unless one already answers; a line saying what happened."""
    servers = bootstrap_servers(broker)
    if is_running(broker):
        pid = broker_pid(broker)
        owner = f"pid {pid}, data in {broker.data_dir}" if pid else "not started from this data directory"
        return f"Kafka already answers on {servers} ({owner}); nothing started"
    pending = broker_pid(broker)
    if pending is not None:
        waited = wait_ready(broker)
        return f"Kafka (pid {pending}) was still starting; it answers on {servers} after {waited:.1f} s more"
    fetched = ensure_jars(broker)
    formatted = format_storage(broker)
    launched = time.monotonic()
    pid = start(broker)
    try:
        wait_ready(broker)
    except BrokerError:
        stop(broker, grace_s=_FAILED_START_GRACE_S)
        raise
    ready_s = time.monotonic() - launched
    notes = [note for note, done in (("jars fetched", fetched), ("storage formatted", formatted)) if done]
    return (
        f"Kafka {kafka_version(broker)} ready on {servers} in {ready_s:.1f} s "
        f"(pid {pid}; data in {broker.data_dir}; log {BrokerFiles(broker.data_dir).server_log}"
        f"{'; ' + ', '.join(notes) if notes else ''})"
    )


def down(broker: BrokerSettings) -> str:
    """Stop the broker started from the configured data directory; a line saying what happened."""
    began = time.monotonic()
    pid = stop(broker)
    if pid is not None:
        return f"stopped Kafka (pid {pid}) in {time.monotonic() - began:.1f} s"
    if is_running(broker):
        return (
            f"a broker answers on {bootstrap_servers(broker)} but was not started from {broker.data_dir}; "
            f"left alone"
        )
    return f"no broker from {broker.data_dir} is running"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.platform.broker", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "jars"])
    command = parser.parse_args(argv).command
    broker = Settings().broker
    try:
        if command == "jars":
            where = "fetched into" if ensure_jars(broker) else "already in"
            print(f"Kafka {kafka_version(broker)} jars {where} {broker.libs_dir}")
        elif command == "up":
            print(up(broker))
        elif command == "down":
            print(down(broker))
        else:
            current = status(broker)
            print(current.describe())
            return 0 if current.answering else 1
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
