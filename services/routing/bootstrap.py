"""Wires the routing context over the adapters it is given: Kafka in main.py, the fakes in tests."""

from __future__ import annotations

from callcenter.routing.v1 import service_pb2, service_pb2_grpc

from services.platform.process import Adapters, Context, open_store, reactions, registration
from services.platform.settings import Settings
from services.platform.timers import DeadlineScheduler
from services.routing.grpc_api import RoutingServicer
from services.routing.handlers import (
    EVENTS_TOPIC,
    REACTS_TO,
    SNAPSHOTS_TOPIC,
    RoutingService,
    kinds,
    registry,
)


def bootstrap(settings: Settings, adapters: Adapters) -> Context[RoutingService]:
    store = open_store(
        settings,
        adapters,
        "routing",
        (EVENTS_TOPIC, SNAPSHOTS_TOPIC),
        registry(),
        kinds(),
        forget_closed=True,
    )
    routing = RoutingService(store, adapters.clock)
    timers = DeadlineScheduler(routing.fire, clock=adapters.clock)
    store.add_listener(timers.track)
    runner = reactions(
        settings, adapters, "routing", REACTS_TO, store, routing.react, after_batch=routing.after_batch
    )
    return Context(
        "routing",
        store,
        routing,
        servicers=[registration(service_pb2_grpc, service_pb2, RoutingServicer(routing))],
        runners=[runner],
        schedulers=[timers],
    )
