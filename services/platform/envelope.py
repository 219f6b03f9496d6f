"""The event envelope, the registry of event types, and their Kafka wire form.

On Kafka an event is one record: key = aggregate id, value = a serialized ``EventEnvelope``
(``proto/callcenter/common/v1/envelope.proto``) whose payload is the event message named by
``event_type``, and headers carrying W3C trace context plus the type and schema version, so
a consumer can route or dead-letter a record without decoding it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import ModuleType

import uuid6
from callcenter.common.v1 import envelope_pb2
from callcenter.platform.v1 import events_pb2 as platform_events
from google.protobuf.message import DecodeError, Message

EVENT_TYPE_HEADER = "event_type"
SCHEMA_VERSION_HEADER = "schema_version"
DEADLETTER_TOPIC = "deadletter.v1"
REASON_HEADER = "deadletter.reason"

Headers = list[tuple[str, bytes]]
Upcaster = Callable[[Message], Message]


def new_event_id() -> str:
    """A UUIDv7: unique, and sortable by creation time."""
    return str(uuid6.uuid7())


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused events: a request's authenticated caller, or the service itself (reactions, timers)."""

    subject: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cause:
    """What led to new events: the request or event that caused them, and the chain they belong to."""

    causation_id: str
    correlation_id: str
    # The digest of the request that caused them (services.platform.requests); "" for events.
    fingerprint: str = ""
    # The caller of that request; None when the service acts on its own (the store's actor).
    actor: Actor | None = None

    @classmethod
    def request(
        cls,
        request_id: str,
        correlation_id: str | None = None,
        fingerprint: str = "",
        actor: Actor | None = None,
    ) -> Cause:
        return cls(request_id, correlation_id or request_id, fingerprint, actor)

    @classmethod
    def event(cls, envelope: Envelope) -> Cause:
        return cls(causation_id=envelope.event_id, correlation_id=envelope.correlation_id)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One domain event with the facts every consumer needs about it."""

    event_id: str
    event_type: str
    schema_version: int
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime
    correlation_id: str
    causation_id: str
    payload: Message
    headers: tuple[tuple[str, bytes], ...] = field(default=(), compare=False)
    request_fingerprint: str = ""
    actor: Actor | None = None

    def with_headers(self, headers: Iterable[tuple[str, bytes]]) -> Envelope:
        return replace(self, headers=tuple(headers))


class PoisonEvent(Exception):
    """A record that cannot become an Envelope; it belongs on the dead-letter topic."""


class UndecodableEvent(PoisonEvent):
    """The bytes are not an EventEnvelope, or the payload is not the message its type names."""


class UnknownEventType(PoisonEvent):
    """The event type or its schema version is not registered with this consumer."""


@dataclass(frozen=True, slots=True)
class _Registration:
    message_class: type[Message]
    schema_version: int


class EventRegistry:
    """Maps event type names and schema versions to payload classes; upcasts old versions on read."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, int], type[Message]] = {}
        self._current: dict[str, _Registration] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, message_class: type[Message], schema_version: int = 1) -> None:
        """Register a payload class; the highest version registered for a type is its current one."""
        event_type = message_class.DESCRIPTOR.name
        key = (event_type, schema_version)
        if key in self._by_version and self._by_version[key] is not message_class:
            raise ValueError(
                f"event type {event_type!r} v{schema_version} is already registered as "
                f"{self._by_version[key].DESCRIPTOR.full_name}"
            )
        self._by_version[key] = message_class
        current = self._current.get(event_type)
        if current is None or current.schema_version < schema_version:
            self._current[event_type] = _Registration(message_class, schema_version)

    def register_module(self, module: ModuleType) -> None:
        """Register every top-level message of a generated ``events_pb2`` module at version 1."""
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            self.register(getattr(module, descriptor.name))

    def add_upcaster(self, event_type: str, from_version: int, upcast: Upcaster) -> None:
        """``upcast`` turns a payload of ``from_version`` into one of ``from_version + 1``."""
        self._upcasters[(event_type, from_version)] = upcast

    def current_version(self, event_type: str) -> int:
        try:
            return self._current[event_type].schema_version
        except KeyError:
            raise UnknownEventType(f"event type {event_type!r} is not registered") from None

    def knows(self, event_type: str) -> bool:
        return event_type in self._current

    def decode_payload(self, event_type: str, schema_version: int, data: bytes) -> tuple[Message, int]:
        """Decode and upcast to the current version; returns the payload and that version."""
        message_class = self._by_version.get((event_type, schema_version))
        if message_class is None:
            known = sorted(v for (t, v) in self._by_version if t == event_type)
            raise UnknownEventType(
                f"event type {event_type!r} v{schema_version} is not registered"
                + (f" (known versions: {known})" if known else "")
            )
        payload = message_class()
        try:
            payload.ParseFromString(data)
        except DecodeError as error:
            raise UndecodableEvent(
                f"payload of {event_type} v{schema_version} does not parse: {error}"
            ) from error
        version = schema_version
        current = self.current_version(event_type)
        while version < current:
            upcast = self._upcasters.get((event_type, version))
            if upcast is None:
                raise UnknownEventType(f"no upcaster for {event_type} from v{version} to v{version + 1}")
            payload = upcast(payload)
            version += 1
        return payload, version

    @classmethod
    def of(cls, *modules: ModuleType) -> EventRegistry:
        """The events of these modules, and the kernel's own, which every events topic may hold."""
        registry = cls()
        for module in (*modules, platform_events):
            registry.register_module(module)
        return registry


def make_envelope(
    payload: Message,
    *,
    registry: EventRegistry,
    aggregate_type: str,
    aggregate_id: str,
    aggregate_version: int,
    occurred_at: datetime,
    cause: Cause,
    actor: Actor | None = None,
) -> Envelope:
    """An event caused by ``cause``, by its actor or else by ``actor`` (the writing service)."""
    event_type = payload.DESCRIPTOR.name
    return Envelope(
        event_id=new_event_id(),
        event_type=event_type,
        schema_version=registry.current_version(event_type),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        occurred_at=occurred_at,
        correlation_id=cause.correlation_id,
        causation_id=cause.causation_id,
        payload=payload,
        request_fingerprint=cause.fingerprint,
        actor=cause.actor or actor,
    )


def encode(envelope: Envelope) -> tuple[bytes, bytes, Headers]:
    """The Kafka key, value and headers of an event (trace headers as already attached)."""
    message = envelope_pb2.EventEnvelope(
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        schema_version=envelope.schema_version,
        aggregate_type=envelope.aggregate_type,
        aggregate_id=envelope.aggregate_id,
        aggregate_version=envelope.aggregate_version,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
        payload=envelope.payload.SerializeToString(),
        request_fingerprint=envelope.request_fingerprint,
    )
    message.occurred_at.FromDatetime(envelope.occurred_at)
    if envelope.actor is not None:
        message.actor.subject = envelope.actor.subject
        message.actor.roles.extend(envelope.actor.roles)
    headers: Headers = [
        *[(k, v) for k, v in envelope.headers if k not in (EVENT_TYPE_HEADER, SCHEMA_VERSION_HEADER)],
        (EVENT_TYPE_HEADER, envelope.event_type.encode()),
        (SCHEMA_VERSION_HEADER, str(envelope.schema_version).encode()),
    ]
    return envelope.aggregate_id.encode(), message.SerializeToString(), headers


def decode(
    value: bytes | None, headers: Sequence[tuple[str, bytes]] | None, registry: EventRegistry
) -> Envelope:
    """The Envelope of a Kafka record's value; raises PoisonEvent naming what is wrong."""
    if not value:
        raise UndecodableEvent("record has no value")
    message = envelope_pb2.EventEnvelope()
    try:
        message.ParseFromString(value)
    except DecodeError as error:
        raise UndecodableEvent(f"value is not an EventEnvelope: {error}") from error
    if not message.event_type or not message.event_id or not message.aggregate_id:
        raise UndecodableEvent("envelope lacks event_type, event_id or aggregate_id")
    payload, version = registry.decode_payload(message.event_type, message.schema_version, message.payload)
    return Envelope(
        event_id=message.event_id,
        event_type=message.event_type,
        schema_version=version,
        aggregate_type=message.aggregate_type,
        aggregate_id=message.aggregate_id,
        aggregate_version=message.aggregate_version,
        occurred_at=message.occurred_at.ToDatetime(tzinfo=UTC),
        correlation_id=message.correlation_id,
        causation_id=message.causation_id,
        payload=payload,
        headers=tuple(headers or ()),
        request_fingerprint=message.request_fingerprint,
        actor=Actor(message.actor.subject, tuple(message.actor.roles)) if message.HasField("actor") else None,
    )


def deadletter_headers(
    headers: Sequence[tuple[str, bytes]], where: tuple[str, int, int], reason: str, by: str
) -> Headers:
    """A dead-lettered record's headers: its own, and why, from where, by whom, when."""
    topic, partition, offset = where
    return [
        *headers,
        (REASON_HEADER, (reason or "unknown").encode()),
        ("deadletter.topic", topic.encode()),
        ("deadletter.partition", str(partition).encode()),
        ("deadletter.offset", str(offset).encode()),
        ("deadletter.consumer", by.encode()),
        ("deadletter.at", datetime.now(UTC).isoformat().encode()),
    ]
