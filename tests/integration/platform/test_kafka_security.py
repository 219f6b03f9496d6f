"""The secured broker: every principal fenced to its topics by the ACLs of deploy/kafka/acls.toml.

A service writing another context's topic, a department reading another's inbox or an internal topic,
and a client the broker does not know are each refused, with the broker's error shown; a service does
what it must (a transaction over its own topic with its group's offsets); the ACL file applies
idempotently and takes back what it no longer grants.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from services.platform import broker
from services.platform.acls import AclSpec, ensure_access, parse_acl_specs
from services.platform.eventstore import ConsumedOffsets, OutgoingRecord, RecordsRefused
from services.platform.kafka import KafkaEventLog, consumer_config

pytestmark = pytest.mark.kafka

DEADLINE_S = 30.0


@pytest.fixture(autouse=True)
def secured(kafka_broker) -> None:
    if not kafka_broker.secured:
        pytest.skip("the session's broker runs plaintext (CC_BROKER__SECURITY=plaintext)")


def _consumer(kafka_broker, principal: str, group: str, topics: list[str]) -> Consumer:
    consumer = Consumer(
        kafka_broker.client_config_as(
            principal,
            **{"group.id": group, "enable.partition.eof": True, "auto.offset.reset": "earliest"},
        )
    )
    consumer.subscribe(topics)
    return consumer


def _first_error(consumer: Consumer) -> KafkaError:
    """The first error the consumer reports other than reaching the end of a partition."""
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is None:
                continue
            if message.error().code() != KafkaError._PARTITION_EOF:
                return message.error()
    finally:
        consumer.close()
    raise AssertionError(f"no error reported within {DEADLINE_S:.0f} s")


def _ends_reached(consumer: Consumer, partitions: int) -> set[tuple[str, int]]:
    """Poll until ``partitions`` partitions are read to their end; raise on any error."""
    ends: set[tuple[str, int]] = set()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(ends) < partitions and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                ends.add((message.topic(), message.partition()))
            elif error is not None:
                raise AssertionError(f"refused: {error.str()}")
    finally:
        consumer.close()
    return ends


def test_a_service_writing_another_contexts_topic_is_refused(kafka_broker) -> None:
    delivered: list[KafkaError | None] = []
    producer = Producer(kafka_broker.client_config_as("intake"))
    producer.produce(
        "routing.events.v1", b"forged", b"call-1", on_delivery=lambda error, _message: delivered.append(error)
    )
    assert producer.flush(DEADLINE_S) == 0

    [error] = delivered
    assert error is not None, "intake wrote routing's events topic"
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error.str()


def test_the_kernels_log_reports_the_refused_record_by_index(kafka_broker) -> None:
    log = KafkaEventLog(
        kafka_broker.kafka_as("intake"),
        "contacts.commands.v1",
        None,
        f"intake-security-{uuid.uuid4().hex[:8]}",
    )
    try:
        with pytest.raises(RecordsRefused) as refused:
            log.commit([OutgoingRecord("agents.events.v1", b"agent-1", b"forged")], [])
    finally:
        log.close()

    assert refused.value.reasons == {
        0: "agents.events.v1 refused a record: Broker: Topic authorization failed"
    }


def test_a_department_reads_its_inbox_and_the_public_topic_with_its_own_group(kafka_broker) -> None:
    public = len(
        kafka_broker.admin()
        .list_topics("workflow.public.v1", timeout=10)
        .topics["workflow.public.v1"]
        .partitions
    )
    consumer = _consumer(
        kafka_broker,
        "dept-finance",
        f"dept-finance-{uuid.uuid4().hex[:8]}",
        ["dept.finance.inbox.v1", "workflow.public.v1"],
    )

    ends = _ends_reached(consumer, 1 + public)

    assert {topic for topic, _ in ends} == {"dept.finance.inbox.v1", "workflow.public.v1"}


@pytest.mark.parametrize("topic", ["dept.legal.inbox.v1", "contacts.events.v1", "deadletter.v1"])
def test_a_department_reading_another_inbox_or_an_internal_topic_is_refused(kafka_broker, topic) -> None:
    consumer = _consumer(kafka_broker, "dept-finance", "dept-finance", [topic])

    error = _first_error(consumer)

    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error.str()


def test_a_department_using_another_departments_group_is_refused(kafka_broker) -> None:
    consumer = _consumer(kafka_broker, "dept-finance", "dept-legal", ["dept.finance.inbox.v1"])

    error = _first_error(consumer)

    assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error.str()


@pytest.mark.parametrize(
    ("user", "password"), [("nobody", "guessed"), ("intake", "not-the-password")], ids=["unknown", "wrong"]
)
def test_a_client_without_valid_credentials_gets_an_authentication_error(
    kafka_broker, user, password
) -> None:
    heard: list[KafkaError] = []
    admin = AdminClient(
        kafka_broker.client_config(
            **{"sasl.username": user, "sasl.password": password, "error_cb": heard.append, "log_level": 0}
        )
    )
    deadline = time.monotonic() + DEADLINE_S
    while not heard and time.monotonic() < deadline:
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=0.5)
        admin.poll(0)

    refusals = [error for error in heard if error.code() == KafkaError._AUTHENTICATION]
    assert refusals, [error.str() for error in heard]
    assert "Authentication failed during authentication due to invalid credentials" in refusals[0].str()


def test_a_client_without_sasl_gets_no_answer(kafka_broker) -> None:
    tls_only = {
        key: value
        for key, value in kafka_broker.client_config(**{"security.protocol": "SSL", "log_level": 0}).items()
        if not key.startswith("sasl.")
    }

    with pytest.raises(KafkaException) as refused:
        AdminClient(tls_only).list_topics(timeout=3)

    assert refused.value.args[0].code() == KafkaError._TRANSPORT, refused.value.args[0].str()


def test_a_service_commits_its_own_topic_with_its_groups_offsets_in_one_transaction(kafka_broker) -> None:
    intake = kafka_broker.kafka_as("intake")
    run = uuid.uuid4().hex[:8]
    group = f"intake-security-{run}"
    source = Consumer(consumer_config(intake, group))
    reacted = TopicPartition("routing.events.v1", 0)
    _, high = source.get_watermark_offsets(reacted, timeout=DEADLINE_S)
    source.assign([TopicPartition(reacted.topic, reacted.partition, high)])
    log = KafkaEventLog(intake, "contacts.commands.v1", None, f"intake-security-{run}")
    try:
        [position] = log.commit(
            [OutgoingRecord("contacts.commands.v1", f"contact-{run}".encode(), b"a command")],
            [ConsumedOffsets({(reacted.topic, reacted.partition): high}, source.consumer_group_metadata())],
        )
        [committed] = source.committed([reacted], timeout=DEADLINE_S)
    finally:
        log.close()
        source.close()

    assert position is not None
    assert committed.offset == high
    read_back = [
        record.value
        for record in KafkaEventLog(intake, "contacts.commands.v1", None, f"intake-reader-{run}").replay(
            {position.partition: position.offset}
        )
        if record.key == f"contact-{run}".encode()
    ]
    assert read_back == [b"a command"]


def _acl_spec(name: str, reacts_to: list[str] | None = None, retired: bool = False) -> AclSpec:
    service = "" if retired else f'[services.{name}]\nowns = "{name}"\nreacts_to = {reacts_to or []!r}\n'
    text = f"retired = {[name] if retired else []!r}\n{service}".replace("'", '"')
    return parse_acl_specs(text, "test-acls.toml", [f"{name}.events.v1", "routing.events.v1"])


def _acls_of(admin: AdminClient, name: str) -> set[str]:
    every = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        f"User:{name}",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    return {
        f"{acl.operation.name} {acl.restype.name} {acl.name}" for acl in admin.describe_acls(every).result()
    }


@pytest.fixture
def throwaway_principal(kafka_broker, tmp_path) -> Iterator[str]:
    name = f"acltest_{uuid.uuid4().hex[:8]}"
    yield name
    ensure_access(kafka_broker.client_config(), _acl_spec(name, retired=True), tmp_path)


def test_the_acl_file_applies_once_and_takes_back_what_it_no_longer_grants(
    kafka_broker, tmp_path, throwaway_principal
) -> None:
    name, admin, config = throwaway_principal, kafka_broker.admin(), kafka_broker.client_config()

    first = ensure_access(config, _acl_spec(name, ["routing.events.v1"]), tmp_path)
    again = ensure_access(config, _acl_spec(name, ["routing.events.v1"]), tmp_path)
    granted = _acls_of(admin, name)
    narrowed = ensure_access(config, _acl_spec(name), tmp_path)
    left = _acls_of(admin, name)
    retired = ensure_access(config, _acl_spec(name, retired=True), tmp_path)

    assert first.users_created == [name] and len(first.granted) == 6
    assert not again.changed, again.report()
    assert "READ TOPIC routing.events.v1" in granted
    assert narrowed.revoked == [f"User:{name} READ on topic routing.events.v1"]
    assert left == granted - {"READ TOPIC routing.events.v1"}
    assert retired.users_removed == [name] and len(retired.revoked) == 5
    assert _acls_of(admin, name) == set()


def test_the_broker_logs_no_password(kafka_broker) -> None:
    if not kafka_broker.started_by_tests:
        pytest.skip("the broker's logs belong to `make kafka-up`")
    files = broker.BrokerFiles(kafka_broker.broker.data_dir)
    logs = files.server_log.read_text(errors="replace") + files.console_log.read_text(errors="replace")
    passwords = [path.read_text().strip() for path in kafka_broker.broker.credentials_dir.glob("*.password")]

    assert passwords
    assert [password for password in passwords if password in logs] == []


def test_a_storage_formatted_plaintext_is_refused_by_a_secured_start(
    kafka_broker, tmp_path, free_port
) -> None:
    plain = kafka_broker.broker.model_copy(
        update={
            "security": "plaintext",
            "port": free_port(),
            "controller_port": free_port(),
            "data_dir": tmp_path / "kafka",
        }
    )
    assert broker.format_storage(plain)
    secured = plain.model_copy(update={"security": "sasl_ssl"})

    with pytest.raises(broker.BrokerError) as refused:
        broker.start(secured)

    assert "formatted without the admin's SCRAM credential (by a plaintext broker)" in str(refused.value)
    assert f"remove {secured.data_dir}" in str(refused.value)
    assert broker.broker_pid(secured) is None
