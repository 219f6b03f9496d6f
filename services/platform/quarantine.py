"""Quarantine: a record of a context's own events topic that it cannot apply never stops the context.

At start-up the event store meets, in its own topic, a record that is not an event, or an event of a
type, version or aggregate kind it does not know, or one its fold refuses. It does not stop: the
record is quarantined. A copy goes to ``deadletter.v1`` with the reason; an audit event
(``RecordQuarantined``, keyed like the aggregate, so on its partition) goes to the topic itself; the
aggregate the record belongs to (its Kafka key) holds back its later events and refuses commands
(FAILED_PRECONDITION, naming the record); everything else is served. Nothing is deleted from the
topic, ever.

An operator resolves it (``python -m services.platform.quarantine``, which calls the service's
OperationsService): ``skip`` passes over the record, recorded as ``QuarantineResolved``, and the
aggregate goes on with the events held back. A record that a newer version of the service can read
is applied at the next start and recorded as readable. A skipped record stays skipped: its
resolution is read before the replay that would meet it again.

    python -m services.platform.quarantine --service intake list
    python -m services.platform.quarantine --service intake skip contacts.events.v1 3 1207 --by ana
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from callcenter.platform.v1 import events_pb2 as platform_events
from callcenter.platform.v1 import service_pb2 as pb
from callcenter.platform.v1 import service_pb2_grpc

from services.platform.envelope import EVENT_TYPE_HEADER, Envelope
from services.platform.errors import InvalidArgument
from services.platform.identity import Role, channel, operator_token
from services.platform.requests import Request
from services.platform.settings import Settings

if TYPE_CHECKING:
    from services.platform.eventstore import LogRecord

KIND = "Quarantine"
EVENT_TYPES = frozenset({"RecordQuarantined", "QuarantineResolved"})
Resolution = platform_events.QuarantineResolution
_NAMES = {
    Resolution.QUARANTINE_RESOLUTION_SKIP: "skipped",
    Resolution.QUARANTINE_RESOLUTION_READABLE: "readable",
}

Position = tuple[str, int, int]


def is_kernel_record(record: LogRecord) -> bool:
    """A quarantine audit event, told by its headers without decoding it."""
    kind = dict(record.headers).get(EVENT_TYPE_HEADER, b"").decode(errors="replace")
    return kind in EVENT_TYPES


@dataclass
class Quarantined:
    """One record the context could not apply, and what became of it."""

    position: Position
    aggregate_id: str
    reason: str
    aggregate_type: str = ""
    event_type: str = ""
    schema_version: int = 0
    record: LogRecord | None = None
    recorded: bool = False  # its RecordQuarantined is in the topic
    resolution: int = Resolution.QUARANTINE_RESOLUTION_UNSPECIFIED
    resolved_by: str = ""

    @property
    def resolved(self) -> bool:
        return self.resolution != Resolution.QUARANTINE_RESOLUTION_UNSPECIFIED

    def describe(self) -> str:
        topic, partition, offset = self.position
        return f"{topic}[{partition}]@{offset} ({self.reason})"

    def audit_event(self) -> platform_events.RecordQuarantined:
        topic, partition, offset = self.position
        return platform_events.RecordQuarantined(
            topic=topic,
            partition=partition,
            offset=offset,
            aggregate_id=self.aggregate_id,
            aggregate_type=self.aggregate_type,
            event_type=self.event_type,
            schema_version=self.schema_version,
            reason=self.reason[:500],
        )


@dataclass
class Quarantine:
    """What a store knows of its quarantined records, and the events each aggregate holds back."""

    records: dict[Position, Quarantined] = field(default_factory=dict)
    held: dict[str, list[tuple[LogRecord, Envelope | None]]] = field(default_factory=dict)

    def learn(self, envelope: Envelope) -> None:
        """An audit event of the topic: a record quarantined before, or resolved since."""
        event = envelope.payload
        position = (event.topic, event.partition, event.offset)
        known = self.records.get(position)
        if envelope.event_type == "RecordQuarantined":
            if known is None:
                known = self.records[position] = Quarantined(position, event.aggregate_id, event.reason)
            known.recorded = True
            known.aggregate_type, known.event_type = event.aggregate_type, event.event_type
            known.schema_version = event.schema_version
        elif envelope.event_type == "QuarantineResolved" and known is not None:
            known.resolution, known.resolved_by = event.resolution, event.resolved_by

    def skipped(self, record: LogRecord) -> bool:
        known = self.records.get((record.topic, record.partition, record.offset))
        return known is not None and known.resolution == Resolution.QUARANTINE_RESOLUTION_SKIP

    def readable_again(self, record: LogRecord) -> bool:
        """A record quarantined before that decodes now; the caller applies it."""
        known = self.records.get((record.topic, record.partition, record.offset))
        if known is None or known.resolved:
            return False
        known.resolution, known.resolved_by = Resolution.QUARANTINE_RESOLUTION_READABLE, "service"
        return True

    def poison(self, record: LogRecord, reason: str, envelope: Envelope | None = None) -> Quarantined:
        key = (record.key or b"").decode(errors="replace")
        position = (record.topic, record.partition, record.offset)
        known = self.records.setdefault(position, Quarantined(position, key, reason))
        known.record, known.reason = record, reason
        if envelope is not None:
            known.aggregate_type, known.event_type = envelope.aggregate_type, envelope.event_type
            known.schema_version = envelope.schema_version
        self.held.setdefault(key, [])
        return known

    def holds(self, key: str) -> bool:
        return key in self.held

    def hold(self, key: str, record: LogRecord, envelope: Envelope | None) -> None:
        self.held[key].append((record, envelope))

    def blocking(self, aggregate_id: str) -> Quarantined | None:
        """The first unresolved record of an aggregate, when it has one."""
        if aggregate_id not in self.held:
            return None
        return next(
            (q for q in self.records.values() if q.aggregate_id == aggregate_id and not q.resolved), None
        )

    def release(self, aggregate_id: str) -> list[tuple[LogRecord, Envelope | None]]:
        """The events an aggregate held back, once none of its records is unresolved (else nothing)."""
        if aggregate_id not in self.held or self.blocking(aggregate_id) is not None:
            return []
        return self.held.pop(aggregate_id)

    def unrecorded(self) -> list[Quarantined]:
        return [q for q in self.records.values() if not q.recorded and q.record is not None]

    def newly_readable(self) -> list[Quarantined]:
        return [q for q in self.records.values() if q.resolution == Resolution.QUARANTINE_RESOLUTION_READABLE]

    def partitions_held(self) -> set[int]:
        return {record.partition for held in self.held.values() for record, _ in held} | {
            q.position[1] for q in self.records.values() if not q.resolved and q.aggregate_id in self.held
        }

    def listing(self) -> list[pb.QuarantinedRecord]:
        return [_message(q, len(self.held.get(q.aggregate_id, ()))) for q in self.records.values()]


def _message(q: Quarantined, held_back: int) -> pb.QuarantinedRecord:
    topic, partition, offset = q.position
    return pb.QuarantinedRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        aggregate_id=q.aggregate_id,
        aggregate_type=q.aggregate_type,
        event_type=q.event_type,
        schema_version=q.schema_version,
        reason=q.reason,
        resolved=q.resolved,
        resolution=_NAMES.get(q.resolution, ""),
        resolved_by=q.resolved_by,
        held_back=held_back if not q.resolved else 0,
    )


def resolution_event(
    q: Quarantined, resolution: int, resolved_by: str, note: str = ""
) -> platform_events.QuarantineResolved:
    topic, partition, offset = q.position
    return platform_events.QuarantineResolved(
        topic=topic,
        partition=partition,
        offset=offset,
        aggregate_id=q.aggregate_id,
        resolution=resolution,
        resolved_by=resolved_by,
        note=note,
    )


class OperationsServicer(service_pb2_grpc.OperationsServiceServicer):
    """Every service's OperationsService, over its event store."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def ListQuarantined(self, request: pb.ListQuarantinedRequest, context) -> pb.ListQuarantinedResponse:
        return pb.ListQuarantinedResponse(records=self._store.quarantined())

    def SkipQuarantined(self, request: pb.SkipQuarantinedRequest, context) -> pb.SkipQuarantinedResponse:
        if not request.topic:
            raise InvalidArgument("topic is required: the events topic of the quarantined record")
        if not request.resolved_by.strip():
            raise InvalidArgument("resolved_by is required: who decides to pass over the record")
        position = (request.topic, request.partition, request.offset)
        record = self._store.skip_quarantined(
            Request.of(request, context), position, request.resolved_by.strip(), request.note
        )
        return pb.SkipQuarantinedResponse(record=record)


def print_records(records: Iterable[pb.QuarantinedRecord]) -> None:
    shown = False
    for r in records:
        shown = True
        state = f"resolved ({r.resolution} by {r.resolved_by})" if r.resolved else f"holds back {r.held_back}"
        kind = r.event_type or "unreadable"
        what = f"{r.aggregate_type or '?'} {r.aggregate_id}: {kind} v{r.schema_version}"
        print(f"{r.topic} {r.partition} {r.offset}  {what}  {state}\n    {r.reason}")
    if not shown:
        print("nothing is quarantined")


def main(argv: list[str] | None = None) -> int:
    from services import launcher

    parser = argparse.ArgumentParser(description="List or skip the records a service quarantined.")
    parser.add_argument("--service", choices=sorted(launcher.addresses()), required=True)
    parser.add_argument("--address", help="the service's gRPC address (default: its local one)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list")
    skip = commands.add_parser("skip", help="pass over one record; its aggregate goes on without it")
    skip.add_argument("topic")
    skip.add_argument("partition", type=int)
    skip.add_argument("offset", type=int)
    skip.add_argument("--by", required=True, help="who decides (kept on the audit event)")
    skip.add_argument("--note", default="")
    # From the environment, not the command line, where the process list would show it.
    token_given = os.environ.get("CC_TOKEN")
    args = parser.parse_args(argv)
    address = args.address or launcher.addresses()[args.service]
    settings = Settings()
    token = operator_token(settings, token_given, Role.ADMIN, f"operator-{getpass.getuser()}")
    with channel(address, settings.tls, token) as grpc_channel:
        operations = service_pb2_grpc.OperationsServiceStub(grpc_channel)
        try:
            if args.command == "list":
                print_records(operations.ListQuarantined(pb.ListQuarantinedRequest(), timeout=10).records)
            else:
                request = pb.SkipQuarantinedRequest(
                    request_id=str(uuid.uuid4()),
                    topic=args.topic,
                    partition=args.partition,
                    offset=args.offset,
                    resolved_by=args.by,
                    note=args.note,
                )
                print_records([operations.SkipQuarantined(request, timeout=30).record])
        except grpc.RpcError as error:
            print(f"{args.service}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
