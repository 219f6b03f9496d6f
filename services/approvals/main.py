"""The approvals service's entry point: its context (bootstrap.py) over Kafka, plus the HTTP API for
departments, served until SIGTERM."""

from __future__ import annotations

import logging
import threading

from fastapi import FastAPI

from services.approvals.bootstrap import bootstrap
from services.approvals.handlers import KIND, ApprovalsService
from services.approvals.http_api import create_app
from services.approvals.policies import load_policies
from services.platform.http import serve_with_http
from services.platform.identity import TokenVerifier
from services.platform.process import ServiceProcess, StartRefused, kafka_adapters, run_main, serve_context
from services.platform.settings import Settings
from services.platform.yamlconfig import ConfigError

log = logging.getLogger("services.approvals")

ApprovalsProcess = ServiceProcess[ApprovalsService]


def start(settings: Settings, stop: threading.Event | None = None) -> ApprovalsProcess:
    """Load every policy version, rebuild the requests from their topic, activate the first version if
    none ever was, then serve gRPC and HTTP, react and time. The HTTP port is bound first, so a taken one
    is refused before the replay."""
    config = settings.approvals
    try:
        policies = load_policies(config.policies_dir, config.calendars_dir)
    except ConfigError as error:
        raise StartRefused(f"approvals cannot start: {error}") from None
    if not any(policy_id == config.policy_id for policy_id, _ in policies):
        raise StartRefused(
            f"approvals cannot start: no version of policy {config.policy_id} in {config.policies_dir}"
        )
    process = serve_with_http(
        settings,
        "approvals",
        lambda: serve_context(settings, bootstrap(settings, kafka_adapters(settings), policies), stop),
        lambda served: http_app(served, settings),
    )
    process.service.activate_first()
    active = process.service.policy_state().active_version
    count = sum(1 for _ in process.store.states(KIND))
    log.info(
        "approvals: %d requests rebuilt; policy %s version %d active; HTTP for departments on port %d",
        count,
        config.policy_id,
        active,
        process.http_port,
    )
    return process


def http_app(process: ApprovalsProcess, settings: Settings) -> FastAPI:
    """The HTTP API over the process's service layer, checking tokens as its gRPC server does."""
    return create_app(process.service, TokenVerifier(settings.auth))


if __name__ == "__main__":
    run_main("approvals", start)
