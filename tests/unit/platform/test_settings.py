"""Settings: local defaults that follow each other, and a fast failure for a cluster without addresses."""

from __future__ import annotations

import pytest

from services.platform.settings import KafkaCredentialsMissing, KafkaSettings, Settings


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
        "CC_KAFKA__SASL_PASSWORD or CC_KAFKA__SASL_PASSWORD_FILE",
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
    monkeypatch.setenv("CC_KAFKA__SASL_PASSWORD_FILE", str(tmp_path / "kafka.password"))


def test_cluster_mode_with_addresses_starts(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _cluster(monkeypatch, tmp_path)
    Settings().require_cluster_addresses()


def test_cluster_mode_refuses_plaintext_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _cluster(monkeypatch, tmp_path)
    monkeypatch.setenv("CC_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ValueError, match="refuses CC_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT"):
        Settings().require_cluster_addresses()


def test_a_service_connects_as_its_own_principal_with_the_password_file_made_for_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("CC_SERVICE_NAME", "routing")
    monkeypatch.setenv("CC_AUTH__DIR", str(tmp_path / "identity"))
    monkeypatch.setenv("CC_TLS__DIR", str(tmp_path / "tls"))
    (tmp_path / "identity" / "kafka").mkdir(parents=True)
    (tmp_path / "identity" / "kafka" / "routing.password").write_text("s3cret\n")

    config = Settings().kafka.client_config()

    assert config == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "SASL_SSL",
        "reconnect.backoff.max.ms": 1000,
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "routing",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(tmp_path / "tls" / "ca.pem"),
    }


def test_the_tooling_connects_as_admin() -> None:
    assert Settings().kafka.sasl_username == "admin"


def test_a_missing_password_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CC_KAFKA__SASL_PASSWORD_FILE", str(tmp_path / "nowhere.password"))
    with pytest.raises(KafkaCredentialsMissing, match=f"cannot read {tmp_path / 'nowhere.password'}"):
        Settings().kafka.client_config()


def test_a_password_never_shows_in_the_settings() -> None:
    settings = Settings(kafka=KafkaSettings(sasl_password="s3cret"))
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_clients_follow_a_plaintext_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC_BROKER__SECURITY", "plaintext")
    assert Settings().kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "PLAINTEXT",
        "reconnect.backoff.max.ms": 1000,
    }


def test_a_default_phone_region_phonenumbers_does_not_know_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CC_PRIVACY__DEFAULT_REGION", "XX")
    with pytest.raises(ValueError, match="'XX' is not a region code"):
        Settings()


def test_cluster_mode_fetches_token_keys_over_https_only(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _cluster(monkeypatch, tmp_path)
    monkeypatch.setenv("CC_AUTH__JWKS_URL", "http://idp.example/jwks.json")
    with pytest.raises(ValueError, match="CC_AUTH__JWKS_URL over https"):
        Settings().require_cluster_addresses()
