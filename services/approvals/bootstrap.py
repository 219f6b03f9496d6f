"""Wires the approvals context over the adapters it is given: Kafka in main.py, the fakes in tests."""

from __future__ import annotations

from collections.abc import Mapping

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
from services.platform.process import Adapters, Context, open_store, reactions
from services.platform.settings import Settings
from services.platform.timers import schedule_deadlines


def bootstrap(
    settings: Settings,
    adapters: Adapters,
    policies: Mapping[tuple[str, int], ApprovalPolicy] | None = None,
) -> Context[ApprovalsService]:
    """``policies``: every version to decide by; by default loaded (strictly) from deploy/approvals/."""
    policies = policies or load_policies()
    store = open_store(settings, adapters, "approvals", (EVENTS_TOPIC, SNAPSHOTS_TOPIC), registry(), kinds())
    approvals = ApprovalsService(store, policies, clock=adapters.clock)
    return Context(
        "approvals",
        store,
        approvals,
        runners=[reactions(settings, adapters, "approvals", REACTS_TO, store, approvals.react)],
        schedulers=[schedule_deadlines(store, {KIND: approvals.on_deadline}, adapters.clock)],
    )
