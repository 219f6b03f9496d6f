"""Wires the intake context over the adapters it is given: Kafka in main.py, the fakes in tests."""

from __future__ import annotations

from callcenter.intake.v1 import service_pb2, service_pb2_grpc

from services.intake.grpc_api import IntakeServicer
from services.intake.handlers import (
    EVENTS_TOPIC,
    REACTS_TO,
    SNAPSHOTS_TOPIC,
    IntakeService,
    contact_kind,
    registry,
)
from services.platform.process import Adapters, Context, open_store, reactions, registration
from services.platform.settings import Settings


def bootstrap(settings: Settings, adapters: Adapters) -> Context[IntakeService]:
    store = open_store(
        settings,
        adapters,
        "intake",
        (EVENTS_TOPIC, SNAPSHOTS_TOPIC),
        registry(),
        [contact_kind()],
        forget_closed=True,
    )
    intake = IntakeService(store, settings.privacy, settings.intake, adapters.clock)
    return Context(
        "intake",
        store,
        intake,
        servicers=[registration(service_pb2_grpc, service_pb2, IntakeServicer(intake))],
        runners=[reactions(settings, adapters, "intake", REACTS_TO, store, intake.react)],
    )
