"""A context served in this process on the session's broker, for integration tests: as its own Kafka
principal, on a clock the test can move, with TLS channels per caller that a restart renews."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import grpc
from callcenter.workflow.v1 import events_pb2 as wf
from confluent_kafka import Consumer, TopicPartition

from services.platform.identity import Role
from services.platform.process import Adapters, Context, ServiceProcess, kafka_adapters, serve_context
from services.platform.settings import GrpcSettings, Settings
from tests.support.clocks import SteppedClock
from tests.support.identity import secure_channel


class LiveContext:
    """``bootstrap(settings, adapters)`` served as ``name``'s principal; ``stub_class`` its gRPC stub."""

    def __init__(
        self,
        kafka_broker: Any,
        name: str,
        bootstrap: Callable[[Settings, Adapters], Context[Any]],
        stub_class: type,
        base: datetime,
        clock: SteppedClock | None = None,
        **settings: Any,
    ) -> None:
        """``clock``: another live context's, for two services on one time; ``settings``: other
        fields of the service's ``Settings`` (its configuration folders, say)."""
        self.broker = kafka_broker
        self.run = uuid.uuid4().hex[:6]
        self.clock = clock or SteppedClock(base)
        self.settings = Settings(
            service_name=name,
            kafka=kafka_broker.kafka_as(name),
            grpc=GrpcSettings(address="127.0.0.1:0"),
            instance_id=f"{name}-{self.run}",
            **settings,
        )
        self._bootstrap = bootstrap
        self._stub_class = stub_class
        self.channels: dict[str, grpc.Channel] = {}
        self.start()

    def start(self) -> None:
        adapters = replace(kafka_adapters(self.settings), clock=self.clock)
        self.process: ServiceProcess[Any] = serve_context(
            self.settings, self._bootstrap(self.settings, adapters)
        )
        self.started()
        self.address = f"127.0.0.1:{self.process.server.port}"
        for channel in self.channels.values():
            channel.close()
        self.channels = {}

    def started(self) -> None:
        """What the service's main does after serving, before callers come (none by default)."""

    def restart(self) -> None:
        self.process.close(5)
        self.start()

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.process.close(5)

    def stub(self, role: Role, subject: str = "", **scopes: Any) -> Any:
        """The service's stub for a caller of ``role``, with a token for ``subject`` and ``scopes``."""
        key = f"{role.value}/{subject}/{scopes}"
        if key not in self.channels:
            self.channels[key] = secure_channel(self.address, role, subject, **scopes)
        return self._stub_class(self.channels[key])


def read_topic(config: dict[str, Any], topic: str) -> list[wf.WorkflowEvent]:
    """Every committed public event of a topic, from the start, with a plain confluent-kafka consumer."""
    return [wf.WorkflowEvent.FromString(record.value()) for record in read_records(config, topic)]


def read_records(config: dict[str, Any], topic: str) -> list[Any]:
    """Every committed record of a topic, from the start, as confluent-kafka gives them."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        consumer.assign(partitions)
        messages: list[Any] = []
        remaining = {p for p, end in ends.items() if end > 0}
        while remaining:
            record = consumer.poll(5)
            if record is None:
                break
            if record.error():
                raise AssertionError(str(record.error()))
            messages.append(record)
            if record.offset() + 1 >= ends[record.partition()]:
                remaining.discard(record.partition())
        return messages
    finally:
        consumer.close()
