"""Settings: local defaults that follow each other, and a fast failure for a cluster without addresses."""

from __future__ import annotations

import pytest

from services.platform.settings import Settings


def test_clients_follow_the_local_broker_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_BROKER__PORT", "29111")
    assert Settings().kafka.bootstrap_servers == "127.0.0.1:29111"


def test_an_explicit_bootstrap_address_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_BROKER__PORT", "29111")
    monkeypatch.setenv("CC_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    assert Settings().kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_cluster_mode_names_every_missing_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_ENVIRONMENT", "cluster")
    missing = "CC_KAFKA__BOOTSTRAP_SERVERS, CC_CLICKHOUSE__URL, CC_PRIVACY__HMAC_KEY not set"
    with pytest.raises(ValueError, match=missing):
        Settings().require_cluster_addresses()


def test_cluster_mode_with_addresses_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_ENVIRONMENT", "cluster")
    monkeypatch.setenv("CC_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("CC_CLICKHOUSE__URL", "http://clickhouse:8123")
    monkeypatch.setenv("CC_PRIVACY__HMAC_KEY", "a-real-secret")
    Settings().require_cluster_addresses()
