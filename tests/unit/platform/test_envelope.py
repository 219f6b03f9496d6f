"""The envelope's wire form, the registry, and upcasting."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from callcenter.common.v1 import envelope_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given
from hypothesis import strategies as st

from services.platform.envelope import (
    Cause,
    EventRegistry,
    UndecodableEvent,
    UnknownEventType,
    decode,
    encode,
    make_envelope,
    new_event_id,
)
from tests.support import tally

WHEN = datetime(2026, 11, 23, 9, 30, 15, 123000, tzinfo=UTC)


def _envelope(registry: EventRegistry, payload, version: int = 1):
    return make_envelope(
        payload,
        registry=registry,
        aggregate_type="Tally",
        aggregate_id="t-1",
        aggregate_version=version,
        occurred_at=WHEN,
        cause=Cause.request("req-1", correlation_id="corr-1"),
    )


def test_event_ids_are_uuid7_and_sort_by_creation() -> None:
    ids = [new_event_id() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 50


@given(item=st.text(max_size=40), quantity=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_encode_then_decode_is_the_same_event(item: str, quantity: int) -> None:
    registry = tally.registry()
    envelope = _envelope(registry, tally.ItemAdded(item=item, quantity=quantity)).with_headers(
        [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    )

    key, value, headers = encode(envelope)
    decoded = decode(value, headers, registry)

    assert key == b"t-1"
    assert decoded == envelope
    assert decoded.occurred_at == WHEN
    assert ("event_type", b"ItemAdded") in headers
    assert ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") in decoded.headers


def test_garbage_bytes_are_undecodable() -> None:
    with pytest.raises(UndecodableEvent, match="not an EventEnvelope"):
        decode(b"\xff\xff\xff not protobuf", [], tally.registry())
    with pytest.raises(UndecodableEvent, match="no value"):
        decode(None, [], tally.registry())


def test_an_envelope_without_identity_is_undecodable() -> None:
    value = envelope_pb2.EventEnvelope(event_type="ItemAdded").SerializeToString()
    with pytest.raises(UndecodableEvent, match="lacks event_type, event_id or aggregate_id"):
        decode(value, [], tally.registry())


def test_unknown_type_and_unknown_version_are_named() -> None:
    registry = tally.registry()
    _, value, headers = encode(_envelope(registry, tally.ItemAdded(item="a", quantity=1)))
    with pytest.raises(UnknownEventType, match="'ItemAdded' v1 is not registered"):
        decode(value, headers, EventRegistry())

    future = envelope_pb2.EventEnvelope.FromString(value)
    future.schema_version = 9
    with pytest.raises(UnknownEventType, match=r"ItemAdded' v9 is not registered \(known versions: \[1\]\)"):
        decode(future.SerializeToString(), headers, registry)


def test_old_versions_are_upcast_on_read() -> None:
    old_registry = tally.registry()
    _, value, headers = encode(_envelope(old_registry, tally.ItemAdded(item="box", quantity=2)))

    registry = tally.registry()
    registry.register(tally.ItemAdded, schema_version=2)
    registry.add_upcaster(
        "ItemAdded", 1, lambda old: tally.ItemAdded(item=old.item, quantity=old.quantity * 12)
    )
    decoded = decode(value, headers, registry)

    assert decoded.schema_version == 2
    assert decoded.payload.quantity == 24


def test_a_missing_upcaster_is_an_unknown_version() -> None:
    _, value, headers = encode(_envelope(tally.registry(), tally.ItemAdded(item="box", quantity=2)))
    registry = tally.registry()
    registry.register(tally.ItemAdded, schema_version=2)
    with pytest.raises(UnknownEventType, match="no upcaster for ItemAdded from v1 to v2"):
        decode(value, headers, registry)


def test_two_payload_classes_cannot_claim_one_type_and_version() -> None:
    other_file = descriptor_pb2.FileDescriptorProto(name="other.proto", package="other.v1", syntax="proto3")
    other_file.message_type.add(name="ItemAdded")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(other_file)
    impostor = message_factory.GetMessageClass(pool.FindMessageTypeByName("other.v1.ItemAdded"))

    with pytest.raises(ValueError, match=r"v1 is already registered as tests\.tally\.v1\.ItemAdded"):
        tally.registry().register(impostor)


def test_cause_from_an_event_keeps_the_correlation() -> None:
    registry = tally.registry()
    first = _envelope(registry, tally.ItemAdded(item="a", quantity=1))
    cause = Cause.event(first)
    assert (cause.causation_id, cause.correlation_id) == (first.event_id, "corr-1")
