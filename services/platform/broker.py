"""The local single-node KRaft broker: Maven Central jars, config, storage, start, readiness, stop.

``python -m services.platform.broker up|down|status`` is what ``make kafka-up`` and ``make kafka-down``
call; the test session fixture uses the same functions with its own data directory and ports.
Everything the broker writes lives under ``BrokerSettings.data_dir``.

Secured by default (``BrokerSettings.security``): clients reach one SASL_SSL listener and log in with
SCRAM-SHA-512, over TLS from the local CA (``services.platform.tls``); the broker talks to itself on
that listener as ``admin``, whose SCRAM credential is written into the storage when it is formatted
(Kafka takes ``--add-scram`` at the first format only). SCRAM does not work between controllers, so
the controller listener stays on loopback over mutual TLS: the broker presents the local CA's
``kafka-broker`` certificate, which that listener alone maps to ``admin``. ``StandardAuthorizer``
enforces the ACLs (``services.platform.acls``) for everyone but ``admin``, the one super user.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
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
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from services.platform.credentials import ensure_password, read_password
from services.platform.settings import (
    ADMIN_PRINCIPAL,
    PROJECT_ROOT,
    SCRAM_MECHANISM,
    BrokerSettings,
    KafkaCredentialsMissing,
    KafkaSettings,
    Settings,
)
from services.platform.tls import BROKER_CLIENT_NAME, LocalCertificates, ensure_local_ca, write_private

KAFKA_DEPLOY_DIR = PROJECT_ROOT / "deploy" / "kafka"
LOG4J_CONFIG = KAFKA_DEPLOY_DIR / "log4j2.properties"
STOP_GRACE_S = 30.0
# A broker that fails during start-up logs one of these and then may hang in its shutdown hooks for
# good, so waiting for the process to exit would only ever end at the timeout.
_FATAL_MARKERS = ("Encountered fatal fault", "Exiting Kafka due to fatal exception")
_FAILED_START_GRACE_S = 5.0
_LOG_TAIL_LINES = 40
_LOGIN_REFUSED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}

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

    @property
    def format_stamp(self) -> Path:
        """How the storage was formatted: its security mode and a digest of the admin's password."""
        return self.data_dir / "format.json"

    @property
    def format_arguments(self) -> Path:
        """The storage tool's arguments, passed as a java @-file so the password is on no command line."""
        return self.data_dir / ".format.args"

    @property
    def keystores(self) -> Path:
        return self.data_dir / "tls"

    @property
    def server_keystore(self) -> Path:
        """The client listener's key and certificate chain (one PEM file, as Kafka's PEM keystore takes)."""
        return self.keystores / "server-keystore.pem"

    @property
    def controller_keystore(self) -> Path:
        """The controller listener's: the certificate the broker presents there, and the listener serves."""
        return self.keystores / "controller-keystore.pem"


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


def client_settings(broker: BrokerSettings, principal: str = ADMIN_PRINCIPAL) -> KafkaSettings:
    """How ``principal`` reaches this broker: in its security mode, with the local CA and its password."""
    return KafkaSettings(
        bootstrap_servers=bootstrap_servers(broker),
        security_protocol="SASL_SSL" if broker.secured else "PLAINTEXT",
        sasl_username=principal,
        sasl_password_file=broker.password_file(principal),
        ssl_ca_location=str(broker.ca_file),
    )


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


def server_properties(broker: BrokerSettings, admin_password: str | None = None) -> str:
    """The broker's ``server.properties``; a secured one needs the admin's password (its own login)."""
    files = BrokerFiles(broker.data_dir)
    controller = f"{broker.host}:{broker.controller_port}"
    clients = "SASL_SSL" if broker.secured else "PLAINTEXT"
    controller_protocol = "SSL" if broker.secured else "PLAINTEXT"
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{controller}",
        "listeners": f"{clients}://{bootstrap_servers(broker)},CONTROLLER://{controller}",
        "advertised.listeners": f"{clients}://{bootstrap_servers(broker)}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": clients,
        "listener.security.protocol.map": f"{clients}:{clients},CONTROLLER:{controller_protocol}",
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
    if broker.secured:
        if admin_password is None:
            raise BrokerError("a secured broker's configuration needs the admin's password")
        properties |= _security_properties(broker, files, admin_password)
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def _security_properties(broker: BrokerSettings, files: BrokerFiles, admin_password: str) -> dict[str, str]:
    ca = str(broker.ca_file.resolve())
    scram_login = (
        f"org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_PRINCIPAL}" password="{admin_password}";'
    )
    return {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # The only super user. A resource without ACLs is then open to nobody else (and the
        # authorizer's allow.everyone.if.no.acl.found stays at its default, false: KAFKA-14435).
        "super.users": f"User:{ADMIN_PRINCIPAL}",
        # Clients, and the broker itself (as admin): SCRAM over TLS, the server's certificate naming
        # 127.0.0.1 and localhost, which librdkafka and the broker's own client both check.
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": scram_login,
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(files.server_keystore),
        "listener.name.sasl_ssl.ssl.truststore.type": "PEM",
        "listener.name.sasl_ssl.ssl.truststore.location": ca,
        # The controller: mutual TLS on loopback. The broker's certificate is both the one the
        # listener serves and the one the broker presents to it; here alone it stands for admin.
        "listener.name.controller.ssl.client.auth": "required",
        "listener.name.controller.ssl.keystore.type": "PEM",
        "listener.name.controller.ssl.keystore.location": str(files.controller_keystore),
        "listener.name.controller.ssl.truststore.type": "PEM",
        "listener.name.controller.ssl.truststore.location": ca,
        "listener.name.controller.ssl.principal.mapping.rules": (
            f"RULE:^CN={BROKER_CLIENT_NAME}$/{ADMIN_PRINCIPAL}/,DEFAULT"
        ),
    }


def write_config(broker: BrokerSettings) -> Path:
    """Write ``server.properties`` for these settings (always, so changed ports take effect).

    A secured broker's configuration holds the admin's password, so it is written owner-only, and
    with it the listeners' PEM keystores from the local CA (created or renewed first).
    """
    files = BrokerFiles(broker.data_dir)
    files.logs.mkdir(parents=True, exist_ok=True)
    if not broker.secured:
        files.config.write_text(server_properties(broker))
        return files.config
    _write_keystores(ensure_local_ca(broker.tls_dir), files)
    write_private(files.config, server_properties(broker, admin_password(broker)).encode())
    return files.config


def admin_password(broker: BrokerSettings) -> str:
    """The local admin's password, created with the storage; a formatted storage needs the same one."""
    password_file = broker.password_file(ADMIN_PRINCIPAL)
    if cluster_id(broker) is None:
        return ensure_password(password_file)[0]
    password = read_password(password_file)
    if password is None:
        raise BrokerError(
            f"the admin's password file {password_file} is missing, and the storage in "
            f"{broker.data_dir} was formatted with its SCRAM credential, which Kafka takes at the first "
            f"format only: restore the file, or remove {broker.data_dir} (its topics go with it)"
        )
    return password


def _write_keystores(certificates: LocalCertificates, files: BrokerFiles) -> None:
    files.keystores.mkdir(mode=0o700, parents=True, exist_ok=True)
    for keystore, key, chain in (
        (files.server_keystore, certificates.server_key, certificates.server_cert),
        (files.controller_keystore, certificates.broker_client_key, certificates.broker_client_cert),
    ):
        write_private(keystore, key.read_bytes() + chain.read_bytes())


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
    """Format the KRaft log directory once; its meta.properties keeps the cluster id. True if formatted.

    A secured broker's storage gets the admin's SCRAM credential now, the only time Kafka takes it;
    ``format.json`` beside it records that (and a digest of the password), so a later start can tell
    a storage it cannot log in to.
    """
    if cluster_id(broker) is not None:
        return False
    files = BrokerFiles(broker.data_dir)
    config = write_config(broker)
    arguments = [
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        new_cluster_id(),
        "--config",
        str(config),
        "--ignore-formatted",
    ]
    password = admin_password(broker) if broker.secured else None
    if password is not None:
        arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={ADMIN_PRINCIPAL},password={password}]"]
    # The java launcher reads the main class and its arguments from this owner-only file, each quoted.
    quoted = ('"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"' for argument in arguments)
    write_private(files.format_arguments, "\n".join(quoted).encode())
    try:
        result = subprocess.run(
            [*_java_command(broker), f"@{files.format_arguments}"],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        files.format_arguments.unlink(missing_ok=True)
    if result.returncode != 0:
        raise BrokerError(
            f"formatting {files.log_dirs} failed (exit {result.returncode}):\n"
            f"{_tail_text(result.stdout + result.stderr)}"
        )
    stamp = {"security": broker.security}
    if password is not None:
        stamp["admin_password_sha256"] = _digest(password)
    files.format_stamp.write_text(json.dumps(stamp) + "\n")
    return True


def check_storage(broker: BrokerSettings) -> None:
    """Refuse, saying what to do, a storage a secured broker could not log in to: formatted without
    the admin's SCRAM credential (plaintext, or before the broker was secured), or with another
    password than the admin's password file holds."""
    if not broker.secured or cluster_id(broker) is None:
        return
    files = BrokerFiles(broker.data_dir)
    try:
        stamp = json.loads(files.format_stamp.read_text())
    except (OSError, ValueError):
        stamp = {}
    remove = (
        f"remove {broker.data_dir} (its topics go with it) and start again, or run the broker "
        f"plaintext (CC_BROKER__SECURITY=plaintext)"
    )
    if stamp.get("security") != "sasl_ssl":
        raise BrokerError(
            f"the storage in {files.log_dirs} was formatted without the admin's SCRAM credential "
            f"({'by a plaintext broker' if stamp else 'before the broker was secured'}), and Kafka adds "
            f"it at the first format only: {remove}"
        )
    if stamp.get("admin_password_sha256") != _digest(admin_password(broker)):
        raise BrokerError(
            f"the storage in {files.log_dirs} was formatted with another admin password than "
            f"{broker.password_file(ADMIN_PRINCIPAL)} holds: restore that file, or {remove}"
        )


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def start(broker: BrokerSettings) -> int:
    """Launch the broker detached from this process (own session, output to the console log); its pid."""
    files = BrokerFiles(broker.data_dir)
    running = broker_pid(broker)
    if running is not None:
        raise BrokerError(f"a broker from {broker.data_dir} is already running as pid {running}")
    ensure_jars(broker)
    check_storage(broker)
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
    refused: list[str] = []
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
            login = f" (the admin's connection was refused: {refused[-1]})" if refused else ""
            raise BrokerError(
                f"the broker did not answer on {bootstrap_servers(broker)} within {timeout_s:.0f} s"
                f"{login}\n{log_tail(broker)}"
            )
        # Connecting the admin client only once the port accepts keeps librdkafka from logging
        # "connection refused" for every attempt while the JVM starts.
        if admin is None and _port_open(broker.host, broker.port):
            try:
                admin = AdminClient(_quiet_admin_config(broker, refused))
            except KafkaCredentialsMissing as missing:
                raise BrokerError(str(missing)) from None
        if admin is not None:
            if _answers_metadata(admin, min(2.0, remaining)):
                return time.monotonic() - started
            admin.poll(0)  # serves error_cb: a refused login is worth saying
        time.sleep(0.05)


def is_running(broker: BrokerSettings, timeout_s: float = 2.0) -> bool:
    """Whether some Kafka broker (ours or not) answers a metadata request on the configured host and
    port, in the configured security mode and (secured) to the local admin's login."""
    if not _port_open(broker.host, broker.port):
        return False
    try:
        admin = AdminClient(_quiet_admin_config(broker))
    except KafkaCredentialsMissing:
        return False
    return _answers_metadata(admin, timeout_s)


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


def _quiet_admin_config(broker: BrokerSettings, refused: list[str] | None = None) -> dict[str, Any]:
    def on_error(error: KafkaError) -> None:
        if refused is not None and error.code() in _LOGIN_REFUSED:
            refused.append(error.str())

    return {
        **client_settings(broker).client_config(),
        "error_cb": on_error,
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
    if pending is None and _port_open(broker.host, broker.port):
        raise BrokerError(
            f"something listens on {servers} but does not answer as a {_mode(broker)} broker; if it is "
            f"one of ours started in another mode (CC_BROKER__SECURITY) or from another data directory, "
            f"stop it first (`make kafka-down` with the same settings)"
        )
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
        f"Kafka {kafka_version(broker)} ready on {servers} in {ready_s:.1f} s, {_mode(broker)} "
        f"(pid {pid}; data in {broker.data_dir}; log {BrokerFiles(broker.data_dir).server_log}"
        f"{'; ' + ', '.join(notes) if notes else ''})"
    )


def _mode(broker: BrokerSettings) -> str:
    if broker.secured:
        return f"SASL_SSL with {SCRAM_MECHANISM} and ACLs (CA {broker.ca_file})"
    return "PLAINTEXT, without authentication or ACLs"


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
