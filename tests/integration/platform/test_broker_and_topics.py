"""The local broker and the declared topics on it: readiness, idempotent ensuring, exactly-once basics."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from services.platform import broker
from services.platform.topics import TopicSpec, ensure_topics, load_topic_specs

pytestmark = pytest.mark.kafka


@pytest.fixture
def scratch_names(kafka_broker) -> Iterator[list[str]]:
    """Names a test creates through ensure_topics; deleted afterwards, so a reused broker stays clean."""
    names: list[str] = []
    yield names
    admin = kafka_broker.admin()
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, request_timeout=30).values():
            future.result()


def _scratch(spec: TopicSpec, names: list[str], prefix: str | None = None) -> TopicSpec:
    prefix = prefix or f"scratch.{uuid.uuid4().hex[:8]}"
    copy = dataclasses.replace(spec, name=f"{prefix}.{spec.name}")
    names.append(copy.name)
    return copy


def _describe(admin: AdminClient, specs: list[TopicSpec]) -> dict[str, tuple[int, dict[str, str]]]:
    topics = admin.list_topics(timeout=10).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
    described = admin.describe_configs(resources)
    return {
        resource.name: (
            len(topics[resource.name].partitions),
            {key: entry.value for key, entry in described[resource].result().items()},
        )
        for resource in resources
    }


def _consume(config: dict, topic: str, expected: int, deadline_s: float = 30.0) -> list[tuple[bytes, bytes]]:
    consumer = Consumer({**config, "group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
    received: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(received) < expected and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                if message.error() is not None:
                    raise KafkaException(message.error())
                received.append((message.key(), message.value()))
    finally:
        consumer.close()
    return received


def test_the_broker_answers_metadata_and_holds_the_declared_topics(kafka_broker) -> None:
    metadata = kafka_broker.admin().list_topics(timeout=10)

    assert broker.is_running(kafka_broker.broker)
    assert len(metadata.brokers) == 1
    assert {spec.name for spec in load_topic_specs()} <= set(metadata.topics)


def test_ensure_topics_creates_every_declared_topic_then_changes_nothing(kafka_broker, scratch_names) -> None:
    prefix = f"scratch.{uuid.uuid4().hex[:8]}"
    specs = [_scratch(spec, scratch_names, prefix) for spec in load_topic_specs()]

    first = ensure_topics(kafka_broker.client_config(), specs)
    second = ensure_topics(kafka_broker.client_config(), specs)

    assert first.created == [spec.name for spec in specs]
    described = _describe(kafka_broker.admin(), specs)
    for spec in specs:
        partitions, config = described[spec.name]
        assert partitions == spec.partitions, spec.name
        assert {key: config[key] for key in spec.config} == dict(spec.config), spec.name
    assert described[f"{prefix}.contacts.events.v1"][1]["retention.ms"] == "-1"
    assert described[f"{prefix}.contacts.snapshots.v1"][1]["cleanup.policy"] == "compact"
    assert described[f"{prefix}.dept.field_service.inbox.v1"][0] == 1
    assert not second.changed
    assert second.report() == []


def test_a_changed_retention_is_altered_in_place(kafka_broker, scratch_names) -> None:
    spec = _scratch(
        TopicSpec("orders", 2, 1, {"cleanup.policy": "delete", "retention.ms": "86400000"}), scratch_names
    )
    ensure_topics(kafka_broker.client_config(), [spec])
    longer = dataclasses.replace(spec, config={**spec.config, "retention.ms": "604800000"})

    changes = ensure_topics(kafka_broker.client_config(), [longer])

    assert changes.reconfigured == {spec.name: {"retention.ms": ("86400000", "604800000")}}
    assert not changes.created and not changes.repartitioned
    partitions, config = _describe(kafka_broker.admin(), [longer])[spec.name]
    assert (partitions, config["retention.ms"], config["cleanup.policy"]) == (2, "604800000", "delete")


def test_a_raised_partition_count_is_applied_and_a_lowered_one_only_reported(
    kafka_broker, scratch_names
) -> None:
    spec = _scratch(TopicSpec("orders", 2, 1, {"cleanup.policy": "compact"}), scratch_names)
    ensure_topics(kafka_broker.client_config(), [spec])

    raised = ensure_topics(kafka_broker.client_config(), [dataclasses.replace(spec, partitions=5)])
    lowered = ensure_topics(kafka_broker.client_config(), [dataclasses.replace(spec, partitions=3)])

    assert raised.repartitioned == {spec.name: (2, 5)}
    assert not lowered.changed
    assert lowered.refused == [
        f"{spec.name} has 5 partitions, more than the 3 declared (partitions are never removed)"
    ]
    assert _describe(kafka_broker.admin(), [spec])[spec.name][0] == 5


def test_an_idempotent_producer_and_a_read_committed_consumer_round_trip(kafka_broker, unique_topic) -> None:
    producer = Producer(kafka_broker.client_config(**{"enable.idempotence": True, "acks": "all"}))
    sent = [(f"agent-{n % 4}".encode(), f"event-{n}".encode()) for n in range(40)]
    for key, value in sent:
        producer.produce(unique_topic, value, key)
    assert producer.flush(30) == 0

    received = _consume(
        kafka_broker.client_config(**{"isolation.level": "read_committed"}), unique_topic, len(sent)
    )

    assert sorted(received) == sorted(sent)
    for key in {key for key, _ in sent}:
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]


def test_an_aborted_transaction_is_invisible_to_a_read_committed_consumer(kafka_broker, unique_topic) -> None:
    producer = Producer(kafka_broker.client_config(**{"transactional.id": f"test-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(5):
        producer.produce(unique_topic, f"aborted-{n}".encode(), b"k")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for n in range(5):
        producer.produce(unique_topic, f"committed-{n}".encode(), b"k")
    producer.commit_transaction(30)

    committed = _consume(kafka_broker.client_config(**{"isolation.level": "read_committed"}), unique_topic, 5)
    everything = _consume(
        kafka_broker.client_config(**{"isolation.level": "read_uncommitted"}), unique_topic, 10
    )

    assert [value for _, value in committed] == [f"committed-{n}".encode() for n in range(5)]
    assert sum(value.startswith(b"aborted-") for _, value in everything) == 5


def test_a_broker_is_started_answers_and_stops_by_its_pid(kafka_broker, tmp_path, free_port) -> None:
    own = kafka_broker.broker.model_copy(
        update={"port": free_port(), "controller_port": free_port(), "data_dir": tmp_path / "kafka"}
    )

    pid = broker.start(own)
    try:
        broker.wait_ready(own)
        current = broker.status(own)
    finally:
        stopped = broker.stop(own)

    assert (current.answering, current.pid, current.cluster_id is not None) == (True, pid, True)
    assert stopped == pid
    assert not broker.is_running(own)
    assert broker.broker_pid(own) is None
    assert broker.stop(own) is None


def test_a_broker_that_cannot_bind_its_port_fails_with_its_log_tail(
    kafka_broker, tmp_path, free_port
) -> None:
    clashing = kafka_broker.broker.model_copy(
        update={
            "port": free_port(),
            "controller_port": kafka_broker.broker.port,
            "data_dir": tmp_path / "kafka",
        }
    )

    broker.start(clashing)
    try:
        with pytest.raises(broker.BrokerError) as failed:
            broker.wait_ready(clashing, timeout_s=60)
    finally:
        broker.stop(clashing)

    assert f"failed while starting on 127.0.0.1:{clashing.port}" in str(failed.value)
    assert f"failed to bind to 127.0.0.1:{clashing.controller_port}: Address already in use" in str(
        failed.value
    )
    assert broker.broker_pid(clashing) is None


def test_metadata_for_an_undeclared_topic_reports_it_unknown(kafka_broker) -> None:
    name = f"undeclared.{uuid.uuid4().hex}"

    topic = kafka_broker.admin().list_topics(name, timeout=10).topics[name]

    assert topic.error is not None and topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
