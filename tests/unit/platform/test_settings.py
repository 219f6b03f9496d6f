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
    with pytest.raises(ValueError) as refused:
        Settings().require_cluster_addresses()
    for name in (
        "CC_KAFKA__BOOTSTRAP_SERVERS",
        "CC_CLICKHOUSE__URL",
        "CC_PRIVACY__HMAC_KEY",
        "CC_TLS__CA_FILE",
        "CC_TLS__CERT_FILE",
        "CC_TLS__KEY_FILE",
        "CC_AUTH__PUBLIC_KEY_FILE or CC_AUTH__JWKS_URL",
    ):
        assert name in str(refused.value)


def test_cluster_mode_refuses_plaintext_grpc(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _cluster(monkeypatch, tmp_path)
    monkeypatch.setenv("CC_TLS__PLAINTEXT", "true")
    with pytest.raises(ValueError, match="refuses CC_TLS__PLAINTEXT"):
        Settings().require_cluster_addresses()


def _cluster(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CC_ENVIRONMENT", "cluster")
    monkeypatch.setenv("CC_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("CC_CLICKHOUSE__URL", "http://clickhouse:8123")
    monkeypatch.setenv("CC_PRIVACY__HMAC_KEY", "a-real-secret")
    for name in ("CA_FILE", "CERT_FILE", "KEY_FILE"):
        monkeypatch.setenv(f"CC_TLS__{name}", str(tmp_path / name.lower()))
    monkeypatch.setenv("CC_AUTH__JWKS_URL", "https://idp.example/jwks.json")


def test_cluster_mode_with_addresses_starts(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _cluster(monkeypatch, tmp_path)
    Settings().require_cluster_addresses()
