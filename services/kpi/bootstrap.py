"""Wires the KPI context over the adapters and the KPI store it is given: Kafka and ClickHouse in
main.py, the fakes and the embedded engine in tests."""

from __future__ import annotations

from callcenter.kpi.v1 import service_pb2, service_pb2_grpc

from services.kpi.grpc_api import KpiServicer
from services.kpi.handlers import REACTS_TO, KpiProjector, kinds, registry
from services.kpi.service import KpiService
from services.kpi.store import KpiStore
from services.platform.process import Adapters, Context, open_store, reactions, registration
from services.platform.settings import Settings


def bootstrap(settings: Settings, adapters: Adapters, facts: KpiStore) -> Context[KpiService]:
    store = open_store(settings, adapters, "kpi", None, registry(), kinds())
    projector = KpiProjector(
        store, facts, lambda: runner.read_horizon(), retention=settings.store.forget_closed_after
    )
    kpis = KpiService(facts, projector.board, adapters.clock)
    runner = reactions(
        settings, adapters, "kpi", REACTS_TO, store, projector.project, after_batch=projector.flush
    )
    return Context(
        "kpi",
        store,
        kpis,
        servicers=[registration(service_pb2_grpc, service_pb2, KpiServicer(kpis))],
        runners=[runner],
        background=[("gauges", kpis.run_gauges)],
        closers=[facts.close],
    )
