"""The KPI service's entry point: its context (bootstrap.py) over Kafka and ClickHouse."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from services.kpi.bootstrap import bootstrap
from services.kpi.handlers import CONTACTS, TICKETS
from services.kpi.scorecard import load_scorecard, weight_rows
from services.kpi.service import KpiService
from services.kpi.store import open_kpi_store
from services.platform.process import (
    ServiceProcess,
    StartRefused,
    kafka_adapters,
    run_main,
    serve_context,
)
from services.platform.settings import Settings
from services.platform.yamlconfig import ConfigError

log = logging.getLogger("services.kpi")

KpiProcess = ServiceProcess[KpiService]


def start(settings: Settings, stop: threading.Event | None = None) -> KpiProcess:
    """Load the scorecard's weights, open the KPI store and write them into it, rebuild the folds, then
    project every context's events and serve the KPIs."""
    try:
        scorecard = load_scorecard(settings.kpi.scorecard_file)
    except ConfigError as error:
        raise StartRefused(f"kpi cannot start: {error}") from None
    facts = open_kpi_store(settings.clickhouse)
    try:
        facts.apply_schema()
        facts.insert("scorecard_weights", weight_rows(scorecard, datetime.now(UTC)))
        process = serve_context(settings, bootstrap(settings, kafka_adapters(settings), facts), stop)
    except BaseException:
        facts.close()
        raise
    store = process.store
    log.info(
        "kpi: %d contacts' and %d tickets' folds restored",
        sum(1 for _ in store.states(CONTACTS)),
        sum(1 for _ in store.states(TICKETS)),
    )
    return process


if __name__ == "__main__":
    run_main("kpi", start)
