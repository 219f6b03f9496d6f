"""Wires the approvals context over the adapters it is given: Kafka in main.py, the fakes in tests."""

from __future__ import annotations

from collections.abc import Mapping

from callcenter.approvals.v1 import service_pb2, service_pb2_grpc

from services.approvals.grpc_api import ApprovalsServicer
from services.approvals.handlers import (
    EVENTS_TOPIC,
    KIND,
    REACTS_TO,
    SNAPSHOTS_TOPIC,
    ApprovalsService,
    kinds,
    registry,
)
from services.approvals.policies import ApprovalPolicy, load_policies
from services.approvals.publisher import publish
from services.platform.process import Adapters, Context, open_store, reactions, registration
from services.platform.settings import Settings
from services.platform.timers import schedule_deadlines

PUBLISHER_GROUP = "approvals-publisher"


def bootstrap(
    settings: Settings,
    adapters: Adapters,
    policies: Mapping[tuple[str, int], ApprovalPolicy] | None = None,
) -> Context[ApprovalsService]:
    """``policies``: every version to decide by; by default loaded (strictly) from the settings' folders."""
    config = settings.approvals
    policies = policies or load_policies(config.policies_dir, config.calendars_dir)
    store = open_store(settings, adapters, "approvals", (EVENTS_TOPIC, SNAPSHOTS_TOPIC), registry(), kinds())
    approvals = ApprovalsService(store, policies, config.policy_id, adapters.clock)
    return Context(
        "approvals",
        store,
        approvals,
        servicers=[registration(service_pb2_grpc, service_pb2, ApprovalsServicer(approvals))],
        runners=[
            reactions(settings, adapters, "approvals", REACTS_TO, store, approvals.react),
            reactions(
                settings, adapters, "approvals", (EVENTS_TOPIC,), store, publish, group=PUBLISHER_GROUP
            ),
        ],
        schedulers=[schedule_deadlines(store, {KIND: approvals.on_deadline}, adapters.clock)],
    )
