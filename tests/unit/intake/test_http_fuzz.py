"""The channel gateways' HTTP API, fuzzed from its own OpenAPI schema (schemathesis): whatever a gateway
sends, the answer is never a server error, and a refused request records nothing."""

from __future__ import annotations

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from services.intake.handlers import EVENTS_TOPIC, SNAPSHOTS_TOPIC, IntakeService, contact_kind, registry
from services.intake.http_api import create_app
from services.platform.eventstore import EventStore
from services.platform.identity import TokenVerifier
from services.platform.settings import IntakeSettings, PrivacySettings, Settings
from tests.support.identity import token
from tests.support.memory import InMemoryBroker, InMemoryEventLog

BROKER = InMemoryBroker()
GATEWAY_TOKEN = token("telephony", "gw-fuzz")


def _gateway() -> FastAPI:
    store = EventStore(
        InMemoryEventLog(BROKER, EVENTS_TOPIC, SNAPSHOTS_TOPIC, "intake-fuzz"), registry(), [contact_kind()]
    )
    store.start()
    service = IntakeService(store, PrivacySettings(hmac_key=SecretStr("test-key")), IntakeSettings())
    return create_app(service, TokenVerifier(Settings().auth))


schema = schemathesis.openapi.from_asgi("/openapi.json", _gateway())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error_and_a_refused_one_records_nothing(case) -> None:
    before = len(BROKER.records(EVENTS_TOPIC))

    response = case.call(headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"})

    assert response.status_code < 500, (
        f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code >= 400:
        assert len(BROKER.records(EVENTS_TOPIC)) == before, "a refused request recorded an event"
