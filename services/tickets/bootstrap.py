"""Wires the tickets context over the adapters it is given: Kafka in main.py, the fakes in tests."""

from __future__ import annotations

from callcenter.tickets.v1 import service_pb2, service_pb2_grpc

from services.platform.process import Adapters, Context, open_store, reactions, registration
from services.platform.settings import Settings
from services.platform.timers import schedule_deadlines
from services.tickets.assignment import Assigner, member_kind
from services.tickets.grpc_api import TicketsServicer
from services.tickets.handlers import (
    EVENTS_TOPIC,
    KIND,
    REACTS_TO,
    SNAPSHOTS_TOPIC,
    TicketsService,
    registry,
    ticket_kind,
)
from services.tickets.policies import Rules, load_rules
from services.tickets.publisher import publish

PUBLISHER_GROUP = "tickets-publisher"


def bootstrap(settings: Settings, adapters: Adapters, rules: Rules | None = None) -> Context[TicketsService]:
    """``rules``: the configuration to decide by; by default loaded (strictly) from the settings' folders."""
    rules = rules or load_rules(settings.tickets.config_dir, settings.tickets.calendars_dir)
    kinds = [ticket_kind(), member_kind()]
    store = open_store(settings, adapters, "tickets", (EVENTS_TOPIC, SNAPSHOTS_TOPIC), registry(), kinds)
    tickets = TicketsService(store, rules, adapters.clock)
    assigner = Assigner(store, rules.groups, tickets.execute, adapters.clock)
    return Context(
        "tickets",
        store,
        tickets,
        servicers=[registration(service_pb2_grpc, service_pb2, TicketsServicer(tickets))],
        runners=[
            reactions(settings, adapters, "tickets", REACTS_TO, store, tickets.react),
            reactions(settings, adapters, "tickets", (EVENTS_TOPIC,), store, publish, group=PUBLISHER_GROUP),
        ],
        schedulers=[schedule_deadlines(store, {KIND: tickets.on_deadline}, adapters.clock)],
        background=[("assigner", assigner.run)],
    )
