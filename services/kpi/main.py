"""Composition root of the KPI service: settings in; projections, live gauges and gRPC out."""

from __future__ import annotations

import logging
import sys
import threading

from callcenter.kpi.v1 import service_pb2, service_pb2_grpc

from services.kpi.grpc_api import KpiServicer
from services.kpi.handlers import CONTACTS, REACTS_TO, KpiProjector, kinds, registry
from services.kpi.service import KpiService
from services.kpi.store import open_kpi_store
from services.platform.process import ServiceProcess, grpc_server, open_store, reactions, run_main, wall_clock
from services.platform.settings import Settings

log = logging.getLogger("services.kpi")

KpiProcess = ServiceProcess[KpiService]


def start(settings: Settings, stop: threading.Event | None = None) -> KpiProcess:
    """Open the KPI store, rebuild the folds, then project every context's events and serve the KPIs."""
    facts = open_kpi_store(settings.clickhouse)
    facts.apply_schema()
    store = open_store(settings, "kpi", None, registry(), kinds())
    projector = KpiProjector(store, facts, wall_clock, retention=settings.store.forget_closed_after)
    store.start()
    kpis = KpiService(facts, projector.board, wall_clock)
    server = grpc_server(settings, service_pb2_grpc, service_pb2, KpiServicer(kpis))
    process = ServiceProcess("kpi", store, kpis, server, stop or threading.Event(), closers=[facts.close])
    runner = reactions(settings, "kpi", REACTS_TO, store, projector.project, after_batch=projector.flush)
    process.run_in_background("projections", runner.run)
    process.run_in_background("gauges", kpis.run_gauges)
    log.info("kpi: %d contacts' folds restored", sum(1 for _ in store.states(CONTACTS)))
    return process


if __name__ == "__main__":
    sys.exit(run_main("kpi", start))
