"""Shared fixtures: the real Kafka broker, once per test session, and fresh topics for isolation.

``kafka_broker`` reuses a broker that already answers on the configured port (``make kafka-up``;
``CC_BROKER__HOST`` / ``CC_BROKER__PORT``, default 127.0.0.1:19092) to the project's admin login.
Otherwise it starts its own on free ports with its data, CA and SCRAM passwords under pytest's
temporary directories, so tests never touch ``.data/``, and stops it at the end of the session. Either
way it is secured (unless ``CC_BROKER__SECURITY=plaintext``), the topics of
``deploy/kafka/topics.toml`` exist and the users and ACLs of ``deploy/kafka/acls.toml`` are applied.
``kafka_broker.kafka`` is the admin's; ``kafka_as(principal)`` another principal's, as a service
connects. Tests that use it are marked ``kafka`` automatically, so ``pytest -m "not kafka"`` skips them.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from services.platform import broker
from services.platform.acls import ensure_access, load_acl_specs
from services.platform.identity import ensure_local
from services.platform.settings import DEFAULT_DATA_DIR, BrokerSettings, KafkaSettings, Settings
from services.platform.topics import ensure_topics, load_topic_specs

# One embedded ClickHouse data folder per pytest process (chdb allows one); tests isolate by database.
pytest_plugins = ["tests.support.embedded_clickhouse"]

# Services started by tests claim their writer ids here, not in the project's .data/run.
os.environ.setdefault("CC_RUN_DIR", tempfile.mkdtemp(prefix="callcenter-run-"))
# The test session's own local CA and token signing key (tests.support.identity creates them).
_IDENTITY = tempfile.mkdtemp(prefix="callcenter-identity-")
os.environ.setdefault("CC_TLS__DIR", os.path.join(_IDENTITY, "tls"))
os.environ.setdefault("CC_AUTH__DIR", os.path.join(_IDENTITY, "identity"))
ensure_local(Settings())


@dataclass(frozen=True)
class KafkaBroker:
    """The broker of this test session and the settings clients use to reach it."""

    bootstrap_servers: str
    kafka: KafkaSettings
    broker: BrokerSettings
    started_by_tests: bool

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """The admin's client configuration (the super user)."""
        return {**self.kafka.client_config(), **overrides}

    def admin(self) -> AdminClient:
        return AdminClient(self.client_config())

    @property
    def secured(self) -> bool:
        return self.broker.secured

    def kafka_as(self, principal: str) -> KafkaSettings:
        """The settings ``principal`` (a service's name, ``dept-<code>``) connects with."""
        return broker.client_settings(self.broker, principal)

    def client_config_as(self, principal: str, **overrides: Any) -> dict[str, Any]:
        return {**self.kafka_as(principal).client_config(), **overrides}

    def environment(self, principal: str) -> dict[str, str]:
        """The ``CC_*`` variables that make a service process connect here as ``principal``."""
        kafka = self.kafka_as(principal)
        return {
            "CC_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "CC_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
            "CC_KAFKA__SASL_USERNAME": principal,
            "CC_KAFKA__SASL_PASSWORD_FILE": str(kafka.sasl_password_file),
            "CC_KAFKA__SSL_CA_LOCATION": str(kafka.ssl_ca_location),
        }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Picks a port on 127.0.0.1 that nothing listens on right now."""
    return lambda: _free_port("127.0.0.1")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    configured = Settings().broker
    # `make kafka-up`'s broker has the project's CA and passwords, not this session's (CC_TLS__DIR...).
    project = configured.model_copy(
        update={
            "tls_dir": DEFAULT_DATA_DIR / "tls",
            "credentials_dir": DEFAULT_DATA_DIR / "identity" / "kafka",
        }
    )
    if broker.is_running(project):
        session_broker, started = project, False
    else:
        session_broker = configured.model_copy(
            update={
                "port": _free_port(configured.host),
                "controller_port": _free_port(configured.host),
                "data_dir": tmp_path_factory.mktemp("kafka"),
            }
        )
        broker.start(session_broker)
        started = True
        try:
            broker.wait_ready(session_broker)
        except broker.BrokerError:
            broker.stop(session_broker, grace_s=5.0)
            raise
    try:
        servers = broker.bootstrap_servers(session_broker)
        kafka = broker.client_settings(session_broker)
        ensure_topics(kafka.client_config(), load_topic_specs())
        if session_broker.secured:
            ensure_access(kafka.client_config(), load_acl_specs(), session_broker.credentials_dir)
        yield KafkaBroker(servers, kafka, session_broker, started)
    finally:
        if started:
            broker.stop(session_broker)


@pytest.fixture
def topic_factory(kafka_broker: KafkaBroker, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Creates fresh, uniquely named topics for one test and deletes them afterwards."""
    admin = kafka_broker.admin()
    created: list[str] = []
    prefix = "test." + re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:120]

    def create(partitions: int = 3, config: Mapping[str, str] | None = None) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(name, partitions, 1, config=dict(config or {}))])[name].result()
        created.append(name)
        _await_topic(admin, name, partitions)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created, request_timeout=30).values():
            future.result()


@pytest.fixture
def unique_topic(topic_factory: Callable[..., str]) -> str:
    """A fresh 3-partition topic that only this test uses."""
    return topic_factory()


def _await_topic(admin: AdminClient, name: str, partitions: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metadata = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            metadata is not None
            and metadata.error is None
            and len(metadata.partitions) == partitions
            and all(p.leader >= 0 for p in metadata.partitions.values())
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"topic {name} has no leaders after {timeout_s:.0f} s")
