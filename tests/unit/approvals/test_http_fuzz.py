"""The departments' approvals HTTP API, fuzzed from its own OpenAPI schema (schemathesis): whatever a
department sends, the answer is never a server error, and a refused request records nothing."""

from __future__ import annotations

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from services.approvals.bootstrap import bootstrap
from services.approvals.handlers import EVENTS_TOPIC
from services.approvals.http_api import create_app
from services.platform.identity import TokenVerifier
from services.platform.settings import GrpcSettings, Settings
from tests.support.identity import token
from tests.support.memory import InMemoryBroker, memory_adapters

BROKER = InMemoryBroker()
FINANCE_TOKEN = token("department", "fin-fuzz", department="finance")


def _approvals() -> FastAPI:
    config = Settings(grpc=GrpcSettings(address="127.0.0.1:0"), instance_id="approvals-fuzz")
    context = bootstrap(config, memory_adapters(BROKER))
    context.store.start()
    context.service.activate_first()
    return create_app(context.service, TokenVerifier(config.auth))


schema = schemathesis.openapi.from_asgi("/openapi.json", _approvals())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error_and_a_refused_one_records_nothing(case) -> None:
    before = len(BROKER.records(EVENTS_TOPIC))

    response = case.call(headers={"Authorization": f"Bearer {FINANCE_TOKEN}"})

    assert response.status_code < 500, (
        f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code >= 400:
        assert len(BROKER.records(EVENTS_TOPIC)) == before, "a refused request recorded an event"
