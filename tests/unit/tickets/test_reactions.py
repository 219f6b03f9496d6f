"""The tickets' reactions over the in-memory broker: a wrap-up's ticket the domain refuses is
dead-lettered with the reason, never dropped, and the wrap-ups after it still open theirs."""

from __future__ import annotations

from datetime import UTC, datetime

from callcenter.agents.v1 import events_pb2 as agent_ev

from services.platform.envelope import (
    DEADLETTER_TOPIC,
    REASON_HEADER,
    Cause,
    Envelope,
    EventRegistry,
    encode,
    make_envelope,
)
from services.platform.errors import NotFound
from services.platform.eventstore import OutgoingRecord
from services.platform.process import serve_context
from services.platform.settings import GrpcSettings, Settings
from services.tickets.bootstrap import bootstrap
from services.tickets.handlers import ticket_id_for
from tests.support.memory import InMemoryBroker, memory_adapters
from tests.support.polling import eventually


def _wrap_up_asking_for_a_ticket(
    agent_id: str, version: int, at: datetime
) -> tuple[Envelope, OutgoingRecord]:
    wrap_up = agent_ev.WrapUpCompleted(
        agent_id=agent_id,
        contact_id=f"{agent_id}-contact-{version}",
        disposition_code="complaint.recorded",
        ticket=agent_ev.TicketRequest(ticket_type="complaint", priority=3, summary="Bus skipped the stop"),
    )
    envelope = make_envelope(
        wrap_up,
        registry=EventRegistry.of(agent_ev),
        aggregate_type="Agent",
        aggregate_id=agent_id,
        aggregate_version=version,
        occurred_at=at,
        cause=Cause.request(f"{agent_id}-wrap-up-{version}"),
    )
    key, value, headers = encode(envelope)
    return envelope, OutgoingRecord("agents.events.v1", key, value, list(headers))


def test_a_wrap_up_whose_ticket_is_refused_is_dead_lettered_not_dropped() -> None:
    broker = InMemoryBroker()
    settings = Settings(
        service_name="tickets", grpc=GrpcSettings(address="127.0.0.1:0"), instance_id="refused-wrap-up"
    )
    process = serve_context(settings, bootstrap(settings, memory_adapters(broker)))
    try:
        # One agent, so one partition: the refused wrap-up is read before the one that opens a ticket.
        refused, first = _wrap_up_asking_for_a_ticket("a-9", 1, datetime(2027, 12, 30, 2, 0, tzinfo=UTC))
        opened, second = _wrap_up_asking_for_a_ticket("a-9", 2, datetime.now(UTC))
        broker.write(first)
        broker.write(second)
        tickets = process.context.service
        eventually(
            lambda: tickets.get(ticket_id_for(f"wrap-up/{opened.event_id}")),
            lambda ticket: ticket.exists,
            "the second wrap-up's ticket",
            not_yet=lambda error: isinstance(error, NotFound),
        )
        [dead] = [r for r in broker.records(DEADLETTER_TOPIC) if r.value == first.value]
        reason = dict(dead.headers)[REASON_HEADER].decode()
        assert reason.startswith("FailedPrecondition: ") and "cn-gov" in reason, reason
        assert tickets.version(ticket_id_for(f"wrap-up/{refused.event_id}")) == 0, "and no ticket"
    finally:
        process.close(2.0)
