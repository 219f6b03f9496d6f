"""Public events: a context's domain events mapped, one by one and explicitly, to the integration
events other departments read (``callcenter.workflow.v1.WorkflowEvent`` on ``workflow.public.v1`` and
on each department's ``dept.<code>.inbox.v1``).

A publisher is a reaction over the context's own topic, exactly once like any other: what it publishes
and the offsets it consumed commit in one transaction. Each published event's id derives from the
domain event's id, the topic and its place among the domain event's events on that topic (the mapping
is deterministic), so a record written again (a retried unit) carries the same id and a subscriber
that keeps the ids it has seen drops it, while two different events never share one. Events the
mapping does not name are not published: an internal event never leaves as it is. ``docs/events.md`` is
the subscribers' guide.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

from callcenter.workflow.v1 import events_pb2 as wf
from google.protobuf.message import Message

from services.platform.envelope import Envelope
from services.platform.eventstore import Transaction
from services.platform.timestamps import ts

PUBLIC_TOPIC = "workflow.public.v1"
# The namespace of published event ids (derived from the domain event's id and the topic): never change it.
PUBLISHED_IDS = uuid.UUID("3c8b1f27-94d6-4e0a-b5a2-6d1e8f9c0b47")

# (topic, the WorkflowEvent field of the payload, the payload) for each public event of a domain event.
Mapping = Callable[[Envelope, Transaction | None], Iterator[tuple[str, str, Message]]]


def publications(
    envelope: Envelope, mapping: Mapping, tx: Transaction | None = None
) -> Iterator[tuple[str, wf.WorkflowEvent]]:
    """(topic, message) for each public event ``mapping`` gives the domain event; none for most."""
    written: dict[str, int] = {}  # how many public events of this domain event each topic got so far
    for topic, field, payload in mapping(envelope, tx):
        nth = written.get(topic, 0)
        written[topic] = nth + 1
        # The first on a topic keeps the plain name (the ids published so far); later ones, such as one
        # approval_needed per department of a parallel step, add their place.
        name = f"{envelope.event_id}/{topic}" + (f"/{nth}" if nth else "")
        message = wf.WorkflowEvent(
            event_id=str(uuid.uuid5(PUBLISHED_IDS, name)),
            occurred_at=ts(envelope.occurred_at),
            correlation_id=envelope.correlation_id,
            subject_id=envelope.aggregate_id,
        )
        getattr(message, field).CopyFrom(payload)
        yield topic, message


def publisher(mapping: Mapping) -> Callable[[Envelope, Transaction], None]:
    """The reaction's handler: the public events go out in the unit that consumes the domain event,
    keyed by the aggregate they are about."""

    def publish(envelope: Envelope, tx: Transaction) -> None:
        for topic, message in publications(envelope, mapping, tx):
            tx.publish(topic, envelope.aggregate_id.encode(), message.SerializeToString())

    return publish
