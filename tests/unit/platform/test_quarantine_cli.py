"""`make quarantine`: the operator's CLI against a served context, over TLS with an admin's token."""

from __future__ import annotations

import uuid

import pytest

from services.agents.bootstrap import bootstrap as agents_bootstrap
from services.platform import quarantine
from services.platform.process import serve_context
from services.platform.settings import GrpcSettings, Settings
from tests.support.identity import token
from tests.support.memory import InMemoryBroker, memory_adapters


@pytest.fixture
def address():
    settings = Settings(grpc=GrpcSettings(address="127.0.0.1:0"), instance_id=f"cli-{uuid.uuid4().hex[:6]}")
    process = serve_context(settings, agents_bootstrap(settings, memory_adapters(InMemoryBroker())))
    yield f"127.0.0.1:{process.server.port}"
    process.close(2.0)


def test_the_operator_lists_what_a_service_quarantined(address, capsys) -> None:
    assert quarantine.main(["--service", "agents", "--address", address, "list"]) == 0
    assert capsys.readouterr().out.strip() == "nothing is quarantined"


def test_a_token_of_another_role_is_refused_and_said_so(address, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CC_TOKEN", token("supervisor", "sv-1"))
    assert quarantine.main(["--service", "agents", "--address", address, "list"]) == 1
    assert capsys.readouterr().err.strip() == (
        "agents: PERMISSION_DENIED: OperationsService.ListQuarantined needs one of the roles admin; "
        "the token of sv-1 has supervisor"
    )
