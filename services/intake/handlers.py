"""The intake service layer: each report once per request id, callers pseudonymised, reactions to routing."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from callcenter.intake.v1 import events_pb2 as intake_events
from callcenter.routing.v1 import events_pb2 as routing_events
from google.protobuf.message import Message

from services.intake import domain
from services.intake.domain import Command, Contact, Party
from services.platform.codec import dataclass_codec
from services.platform.envelope import Cause, Envelope, EventRegistry
from services.platform.errors import DomainError, InvalidArgument, NotFound, Overloaded
from services.platform.eventstore import AggregateKind, EventStore, Loaded, Transaction
from services.platform.privacy import Identifier, Kind, UnreadableIdentifier, pseudonym, read
from services.platform.requests import Request
from services.platform.settings import IntakeSettings, PrivacySettings

KIND = "Contact"
EVENTS_TOPIC = "contacts.events.v1"
SNAPSHOTS_TOPIC = "contacts.snapshots.v1"
REACTS_TO = ("routing.events.v1",)
# The namespace of contact ids derived from a StartContact's request id: never change it, or a start
# retried across the change would name a second contact.
CONTACT_IDS = uuid.UUID("6f1c1c8e-3b0a-4f7e-9a57-4b1f0c2d9e11")


# Routing's answers to a routing request: the contact queued, or refused at the door.
ROUTING_TAKES_UP = frozenset({"ContactQueued", "QueueJoinRefused"})


class RoutingBacklog:
    """How far routing is behind intake: the age of the oldest routing request it has not taken up.

    A gauge of this process (it starts empty after a restart), fed by intake's own requests and by
    routing's answers as intake's reactions read them. An answer may come before its request is
    recorded here (routing is quick, the thread that made the request slow to resume after its
    commit): it is kept for a while, and the request it answers is then never counted as waiting.
    """

    KEEP_EARLY = 10_000

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, datetime] = OrderedDict()
        self._early: OrderedDict[str, None] = OrderedDict()

    def requested(self, contact_id: str) -> None:
        with self._lock:
            if contact_id in self._early:
                del self._early[contact_id]
                return
            self._pending[contact_id] = self._clock()
            self._pending.move_to_end(contact_id)

    def taken(self, contact_id: str) -> None:
        with self._lock:
            if self._pending.pop(contact_id, None) is None:
                self._early[contact_id] = None
                while len(self._early) > self.KEEP_EARLY:
                    self._early.popitem(last=False)

    def behind(self) -> timedelta:
        with self._lock:
            if not self._pending:
                return timedelta(0)
            return self._clock() - next(iter(self._pending.values()))


def registry() -> EventRegistry:
    """Every event intake reads: its own and routing's."""
    return EventRegistry.of(intake_events, routing_events)


def contact_kind() -> AggregateKind[Contact]:
    encode, decode = dataclass_codec(Contact)
    return AggregateKind(
        name=KIND,
        initial=Contact,
        evolve=domain.evolve,
        snapshot=encode,
        restore=decode,
        state_version=2,
        closed=domain.closed,
    )


def contact_id_for(request_id: str) -> str:
    """The id of a contact started without one: the same for every retry of the same request."""
    return str(uuid.uuid5(CONTACT_IDS, request_id))


class IntakeService:
    """Runs telephony's reports against Contact aggregates, exactly once per request id.

    Each report goes through the kernel's write path (``EventStore.execute``): once per request id,
    decided against the contact's newest state. Customer identifiers become a keyed HMAC and a masked
    form here (``party``), before any command is built, so neither the domain nor an event ever holds
    one in clear.
    """

    def __init__(
        self,
        store: EventStore,
        privacy: PrivacySettings,
        settings: IntakeSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._privacy = privacy
        self._settings = settings
        self._clock = clock
        self.backlog = RoutingBacklog(clock)

    def now(self) -> datetime:
        return self._clock()

    def party(self, identifier: str, field: str) -> Party:
        """A customer's number or address, as ``field`` of a request gave it, as the keyed HMAC and
        masked form; empty for an anonymous caller (no number, or a withheld one). A text that is none
        of these is refused naming the field (services.platform.privacy says what is read)."""
        return self._party(self._read(identifier, field))

    def number_to_call(self, number: str, field: str) -> Party:
        """A number the center is to call, read as ``party`` reads it; empty when none is given. A
        withheld number or an e-mail address cannot be called: refused naming the field."""
        if not number.strip():
            return Party()
        identifier = self._read(number, field)
        match identifier.kind:
            case Kind.WITHHELD:
                raise InvalidArgument(
                    f"{field}: a withheld number (anonymous, restricted, unavailable) cannot be called "
                    f"back; give the number to call, or leave {field} empty to call the caller's own"
                )
            case Kind.EMAIL:
                raise InvalidArgument(f"{field}: an e-mail address cannot be called; give a phone number")
        return self._party(identifier)

    def _read(self, identifier: str, field: str) -> Identifier:
        try:
            return read(identifier, self._privacy.default_region)
        except UnreadableIdentifier as error:
            raise InvalidArgument(f"{field}: {error}") from None

    def _party(self, identifier: Identifier) -> Party:
        reference = pseudonym(identifier, self._privacy)
        return Party(reference.hash, reference.masked)

    def execute(self, request: Request, command: Command) -> Contact:
        if isinstance(command, domain.StartContact):
            if not command.contact_id and request.request_id:
                command = replace(command, contact_id=contact_id_for(request.request_id))
            self._admit(command.contact_id)
        vips = self._settings.vip_caller_hashes
        asked = False

        def decide(contact: Loaded[Contact]) -> list[Message]:
            nonlocal asked
            events = domain.decide(contact.state, command, vips)
            asked = any(isinstance(event, intake_events.RoutingRequested) for event in events)
            return events

        loaded = self._store.execute(request, KIND, command.contact_id, decide)
        if not loaded.exists:
            raise NotFound(f"contact {command.contact_id} is not known (never started, or ended long ago)")
        # Only the call that wrote a routing request waits for routing's answer: a retry, or a twin
        # that waited for the first, returns the first's result and asks routing nothing.
        if asked:
            self.backlog.requested(command.contact_id)
        return loaded.state

    def _admit(self, contact_id: str) -> None:
        """A new contact is refused at once while routing is far behind: the contacts already in the
        center keep flowing, and the caller hears the busy announcement instead of waiting unrouted."""
        behind = self.backlog.behind()
        limit = self._settings.max_routing_backlog
        if behind > limit and not self._store.load(KIND, contact_id).exists:
            raise Overloaded(
                f"the center is at capacity: routing is {behind.total_seconds():.1f} s behind (at most "
                f"{limit.total_seconds():g} s); refuse the caller with the busy announcement and try later"
            )

    def get(self, contact_id: str) -> Contact:
        loaded = self._store.load(KIND, contact_id)
        if not loaded.exists:
            raise NotFound(f"contact {contact_id} is not known (never started, or ended long ago)")
        return loaded.state

    def react(self, envelope: Envelope, tx: Transaction) -> None:
        """The consumer runner's handler for routing's events."""
        if envelope.event_type in ROUTING_TAKES_UP:
            self.backlog.taken(envelope.aggregate_id)
        command = domain.ended_by_routing(envelope.event_type, envelope.payload)
        if command is None:
            return
        vips = self._settings.vip_caller_hashes
        try:
            tx.decide(
                KIND,
                command.contact_id,
                lambda contact: domain.decide(contact.state, command, vips),
                Cause.event(envelope),
            )
        except DomainError:
            # The contact ended before routing's decision arrived (or is unknown here): nothing to do.
            return
