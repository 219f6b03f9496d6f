"""The KPI service's entry point: its context (bootstrap.py) over Kafka and ClickHouse."""

from __future__ import annotations

import logging
import threading

from services.kpi.bootstrap import bootstrap
from services.kpi.handlers import CONTACTS
from services.kpi.service import KpiService
from services.kpi.store import open_kpi_store
from services.platform.process import ServiceProcess, kafka_adapters, run_main, serve_context
from services.platform.settings import Settings

log = logging.getLogger("services.kpi")

KpiProcess = ServiceProcess[KpiService]


def start(settings: Settings, stop: threading.Event | None = None) -> KpiProcess:
    """Open the KPI store, rebuild the folds, then project every context's events and serve the KPIs."""
    facts = open_kpi_store(settings.clickhouse)
    facts.apply_schema()
    try:
        process = serve_context(settings, bootstrap(settings, kafka_adapters(settings), facts), stop)
    except BaseException:
        facts.close()
        raise
    log.info("kpi: %d contacts' folds restored", sum(1 for _ in process.store.states(CONTACTS)))
    return process


if __name__ == "__main__":
    run_main("kpi", start)
