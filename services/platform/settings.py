"""Typed settings for every process: read once in a service's main.py, passed down as arguments.

Environment variables use the prefix ``CC_`` and ``__`` between nested names, for example
``CC_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``CC_CLICKHOUSE__URL=http://clickhouse:8123``.
Defaults serve local development on this machine; ``require_cluster_addresses`` fails fast
when a production deployment forgot an address.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import phonenumbers
from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / ".data"


ADMIN_PRINCIPAL = "admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"


class KafkaCredentialsMissing(ValueError):
    """A SASL client has no password: the message names the file it looked for and the settings."""


class KafkaSettings(BaseModel):
    """Where the brokers are and how to reach them: by default SASL_SSL with SCRAM-SHA-512.

    Locally (``Settings`` fills these in) the user is this process's principal (its service name, or
    ``admin`` for the tooling), the password is the file the project created for it under the
    identity dir, and the CA is the local one; a cluster gives ``sasl_password`` or
    ``sasl_password_file``. The password is read when a client is made, never logged.
    """

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "SASL_SSL"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = SCRAM_MECHANISM
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_location: str | None = None
    client_id_prefix: str = "callcenter"
    transaction_timeout_ms: int = 60_000
    # Every call that waits on a broker gives up after this; a commit retries for commit_timeout_s.
    call_timeout_s: float = 5.0
    commit_timeout_s: float = 10.0
    # Sending a reaction's offsets takes milliseconds; one that has not returned by this is stuck (a
    # librdkafka bug after a broker restart), and its producer is replaced.
    offsets_timeout_s: float = 2.0
    # How long start-up waits for the writer's first init and for reading a topic to make progress.
    open_timeout_s: float = 30.0
    # A consumer-group member that stops heart-beating loses its partitions after this (the broker's
    # group.min.session.timeout.ms, 6 s by default, is the floor); a static member that restarts with
    # the same instance id takes them back at once.
    session_timeout_ms: int = 6_000

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def client_config(self) -> dict[str, str | int]:
        """The librdkafka properties every client of ours shares.

        Raises ``KafkaCredentialsMissing`` when a SASL client has no user or no password.
        """
        config: dict[str, str | int] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            # A broker back from a restart is found within a second, not after librdkafka's
            # exponential backoff (up to 10 s by default) has grown through the outage.
            "reconnect.backoff.max.ms": 1000,
        }
        if self.uses_sasl:
            if self.sasl_username is None:
                raise KafkaCredentialsMissing(
                    f"{self.security_protocol} needs a user: CC_KAFKA__SASL_USERNAME is not set"
                )
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.password()
        if self.uses_tls and self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config

    def password(self) -> str:
        """The SASL password: ``sasl_password`` if given, else the first line of ``sasl_password_file``."""
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is None:
            raise KafkaCredentialsMissing(
                f"no Kafka password for {self.sasl_username}: set CC_KAFKA__SASL_PASSWORD or "
                f"CC_KAFKA__SASL_PASSWORD_FILE"
            )
        try:
            password = self.sasl_password_file.read_text().strip()
        except OSError as error:
            raise KafkaCredentialsMissing(
                f"no Kafka password for {self.sasl_username}: cannot read {self.sasl_password_file} "
                f"({error.strerror}); `make kafka-up` creates the local ones, a cluster sets "
                f"CC_KAFKA__SASL_PASSWORD_FILE or CC_KAFKA__SASL_PASSWORD"
            ) from None
        if not password:
            raise KafkaCredentialsMissing(
                f"no Kafka password for {self.sasl_username}: {self.sasl_password_file} is empty"
            )
        return password

    def as_principal(self, name: str, password_file: Path) -> KafkaSettings:
        """These settings for another principal, its password read from ``password_file``."""
        return self.model_copy(
            update={"sasl_username": name, "sasl_password": None, "sasl_password_file": password_file}
        )

    def following(self, broker: BrokerSettings, principal: str, local: bool) -> KafkaSettings:
        """These settings with what was not given taken from the local broker: its address, its
        security mode (a plaintext broker makes its clients plaintext), and, in local mode, the CA and
        the password file the project created for ``principal``."""
        given = self.model_fields_set
        update: dict[str, object] = {}
        if "bootstrap_servers" not in given:
            update["bootstrap_servers"] = f"{broker.host}:{broker.port}"
        if broker.security == "plaintext" and "security_protocol" not in given:
            update["security_protocol"] = "PLAINTEXT"
        username = self.sasl_username or principal
        if self.sasl_username is None:
            update["sasl_username"] = username
        if local and self.sasl_password is None and self.sasl_password_file is None:
            update["sasl_password_file"] = broker.password_file(username)
        if local and self.ssl_ca_location is None:
            update["ssl_ca_location"] = str(broker.ca_file)
        return self.model_copy(update=update) if update else self


class BrokerSettings(BaseModel):
    """The local single-node KRaft broker that ``make kafka-up`` and the tests start.

    ``security="sasl_ssl"`` (the default): clients on SASL_SSL with SCRAM-SHA-512, the controller on
    loopback over mutual TLS, ACLs enforced. ``"plaintext"`` (``CC_BROKER__SECURITY=plaintext``) runs
    it open, without authentication or ACLs, to benchmark against; clients follow it.
    """

    host: str = "127.0.0.1"
    port: int = 19092
    controller_port: int = 19093
    data_dir: Path = DEFAULT_DATA_DIR / "kafka"
    libs_dir: Path = PROJECT_ROOT / "deploy" / "kafka" / "target" / "libs"
    heap: str = "512m"
    startup_timeout_s: float = 60.0
    security: Literal["sasl_ssl", "plaintext"] = "sasl_ssl"
    # The local CA (services.platform.tls) and the SCRAM passwords the project creates, one file per
    # principal; unless given they follow Settings' tls.dir and auth.dir ("<auth.dir>/kafka").
    tls_dir: Path = DEFAULT_DATA_DIR / "tls"
    credentials_dir: Path = DEFAULT_DATA_DIR / "identity" / "kafka"

    @property
    def secured(self) -> bool:
        return self.security == "sasl_ssl"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    def password_file(self, principal: str) -> Path:
        return self.credentials_dir / f"{principal}.password"

    def following(self, tls_dir: Path, identity_dir: Path) -> BrokerSettings:
        """These settings with the directories not given taken from the process's TLS and identity dirs."""
        update = {
            name: value
            for name, value in (("tls_dir", tls_dir), ("credentials_dir", identity_dir / "kafka"))
            if name not in self.model_fields_set
        }
        return self.model_copy(update=update) if update else self


class ClickHouseSettings(BaseModel):
    """The KPI store: a ClickHouse server when ``url`` is set, embedded chdb under ``data_dir`` when not."""

    url: str | None = None
    username: str = "default"
    password: str = ""
    database: str = "callcenter"
    data_dir: Path = DEFAULT_DATA_DIR / "clickhouse"


class TelemetrySettings(BaseModel):
    """Where traces and metrics go."""

    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    metric_interval_ms: int = 10_000


class PrivacySettings(BaseModel):
    """The key that pseudonymises caller numbers (keyed HMAC); the local default is for development only."""

    hmac_key: SecretStr = SecretStr("local-development-key-not-for-production")
    # How many trailing digits a masked number shows, e.g. 4 -> "*******1234".
    masked_digits: int = 4
    # The region a number without its country code is read in (ISO 3166 code, as phonenumbers takes it).
    default_region: str = "CN"

    @field_validator("default_region")
    @classmethod
    def _a_region_phonenumbers_knows(cls, region: str) -> str:
        # A wrong code would make every national number unreadable, so every such call refused.
        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{region!r} is not a region code phonenumbers knows (e.g. CN, GB, US)")
        return region.upper()


class TlsSettings(BaseModel):
    """The certificates the services serve and trust. Locally a CA and a certificate for 127.0.0.1 and
    localhost are created under ``dir`` (services.platform.tls); a cluster gives the files."""

    dir: Path = DEFAULT_DATA_DIR / "tls"
    # The CA clients trust, the server's certificate chain and its private key (PEM); default: the
    # local CA's files under ``dir``. In cluster mode all three must be given.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # gRPC without TLS: refused outside local mode. Tokens are still required and checked.
    plaintext: bool = False

    @property
    def ca(self) -> Path:
        return self.ca_file or self.dir / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.cert_file or self.dir / "server.pem"

    @property
    def key(self) -> Path:
        return self.key_file or self.dir / "server.key"


class AuthSettings(BaseModel):
    """How callers' bearer tokens (JWT) are checked, and, locally, issued (``make token``).

    Tokens are verified with ``public_key_file`` (PEM) or the issuer's ``jwks_url``; locally a key
    pair is created under ``dir`` and ``make token`` signs with its private half.
    """

    issuer: str = "callcenter-local"
    audience: str = "callcenter"
    # The only algorithms a token may be signed with: asymmetric ones, never "none" or HMAC.
    algorithms: tuple[Literal["EdDSA", "ES256", "ES384", "RS256", "PS256"], ...] = ("EdDSA",)
    dir: Path = DEFAULT_DATA_DIR / "identity"
    public_key_file: Path | None = None
    jwks_url: str | None = None
    # The local issuer's private key (``make token``); never needed by a service.
    signing_key_file: Path | None = None
    # Clock skew tolerated on exp / nbf / iat.
    leeway_s: float = 30.0
    # Tokens issued by ``make token`` live this long unless asked otherwise.
    default_lifetime: timedelta = timedelta(hours=12)

    @property
    def public_key(self) -> Path:
        return self.public_key_file or self.dir / "token-signing.pub"

    @property
    def signing_key(self) -> Path:
        return self.signing_key_file or self.dir / "token-signing.key"


class GrpcSettings(BaseModel):
    """The address a service's gRPC server binds; port 0 picks a free port (tests)."""

    address: str = "127.0.0.1:50051"
    grace_period_s: float = 10.0
    # A write call waits in its worker for the group commit that carries it, so the workers bound how
    # many calls one commit can carry: at 80 contacts/s, 128 connected 16% more than 16 (bench).
    max_workers: int = 128
    # Calls beyond this many at once are refused with RESOURCE_EXHAUSTED instead of queueing.
    max_concurrent_rpcs: int = 256


class HttpSettings(BaseModel):
    """The address of a service's small HTTP API (intake's for channel gateways, tickets' for gateways
    and departments, approvals' for departments), over TLS like gRPC; one per process like
    ``grpc.address`` (the launcher gives each service its own port: intake 8080, tickets 8085,
    approvals 8086); port 0 picks a free port."""

    address: str = "127.0.0.1:8080"


class StoreSettings(BaseModel):
    """How a service's event store keeps its aggregates in memory."""

    snapshot_every: int = 5_000
    # Writes waiting for the log beyond this many are refused at once (RESOURCE_EXHAUSTED).
    max_queued_units: int = 10_000
    # A contact's aggregates are forgotten this long after it closed; late reports get NOT_FOUND.
    forget_closed_after: timedelta = timedelta(hours=1)


class IntakeSettings(BaseModel):
    """Intake's business settings."""

    # Keyed HMACs (hex, as in PartyReference.hash) of callers routed with the queue's VIP boost.
    vip_caller_hashes: frozenset[str] = frozenset()
    # New contacts are refused (RESOURCE_EXHAUSTED) while routing is further behind than this.
    max_routing_backlog: timedelta = timedelta(seconds=5)


class TicketsSettings(BaseModel):
    """Where the tickets service reads its configuration (services/tickets/policies.py)."""

    # sla-policy.yaml, dispatch-catalogue.yaml and groups.yaml.
    config_dir: Path = PROJECT_ROOT / "deploy" / "tickets"
    # The business calendars (shared with approvals), one YAML file each.
    calendars_dir: Path = PROJECT_ROOT / "deploy" / "calendars"


class ApprovalsSettings(BaseModel):
    """Where the approvals service reads its policies (services/approvals/policies.py)."""

    # Every version of every approval policy, one YAML file each.
    policies_dir: Path = PROJECT_ROOT / "deploy" / "approvals"
    # The policy whose versions choose the chains of new requests.
    policy_id: str = "approvals"
    # The business calendars the deadlines count on: the tickets' own.
    calendars_dir: Path = PROJECT_ROOT / "deploy" / "calendars"


class KpiSettings(BaseModel):
    """Where the KPI service reads its configuration (services/kpi/scorecard.py)."""

    # The monthly department scorecard's weights, versioned.
    scorecard_file: Path = PROJECT_ROOT / "deploy" / "kpi" / "scorecard.yaml"


class Settings(BaseSettings):
    """All settings of one process."""

    model_config = SettingsConfigDict(env_prefix="CC_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "callcenter"
    instance_id: str = "0"
    environment: Literal["local", "cluster"] = "local"
    # Where a running process claims its writer id on this machine (services.platform.process).
    run_dir: Path = DEFAULT_DATA_DIR / "run"
    # A crash point for the fault suite (services.platform.failpoints); empty in every real deployment.
    failpoint: str = ""
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    tickets: TicketsSettings = Field(default_factory=TicketsSettings)
    approvals: ApprovalsSettings = Field(default_factory=ApprovalsSettings)
    kpi: KpiSettings = Field(default_factory=KpiSettings)
    _kafka_given: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _clients_follow_the_local_broker(self) -> Settings:
        """Unless given explicitly, clients connect to the local broker wherever its port was moved, in
        its security mode, as this process's principal (``kafka_principal``); locally with the CA and
        the password file the project created."""
        self._kafka_given = "bootstrap_servers" in self.kafka.model_fields_set
        self.broker = self.broker.following(self.tls.dir, self.auth.dir)
        self.kafka = self.kafka.following(
            self.broker, self.kafka_principal, local=self.environment == "local"
        )
        return self

    @property
    def kafka_principal(self) -> str:
        """The Kafka user of this process: its service name, or admin for the tooling (no service name)."""
        unnamed = type(self).model_fields["service_name"].default
        return ADMIN_PRINCIPAL if self.service_name == unnamed else self.service_name

    def require_cluster_addresses(self) -> None:
        """In cluster mode every address must be given explicitly; local defaults would be wrong there."""
        if self.environment != "cluster":
            return
        missing = []
        if not self._kafka_given:
            missing.append("CC_KAFKA__BOOTSTRAP_SERVERS")
        if self.clickhouse.url is None:
            missing.append("CC_CLICKHOUSE__URL")
        if self.privacy.hmac_key == PrivacySettings().hmac_key:
            missing.append("CC_PRIVACY__HMAC_KEY")
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(self.tls, name) is None:
                missing.append(f"CC_TLS__{name.upper()}")
        if self.auth.public_key_file is None and self.auth.jwks_url is None:
            missing.append("CC_AUTH__PUBLIC_KEY_FILE or CC_AUTH__JWKS_URL")
        if self.auth.jwks_url is not None and not self.auth.jwks_url.startswith("https://"):
            raise ValueError(
                "environment=cluster needs CC_AUTH__JWKS_URL over https: keys fetched in clear can be forged"
            )
        if (
            self.kafka.uses_sasl
            and self.kafka.sasl_password is None
            and self.kafka.sasl_password_file is None
        ):
            missing.append("CC_KAFKA__SASL_PASSWORD or CC_KAFKA__SASL_PASSWORD_FILE")
        if self.tls.plaintext:
            raise ValueError("environment=cluster refuses CC_TLS__PLAINTEXT: gRPC is served over TLS only")
        if not self.kafka.uses_tls:
            raise ValueError(
                f"environment=cluster refuses CC_KAFKA__SECURITY_PROTOCOL={self.kafka.security_protocol} "
                f"(or CC_BROKER__SECURITY=plaintext): Kafka is reached over TLS only"
            )
        if missing:
            raise ValueError(
                f"environment=cluster needs explicit addresses and secrets: {', '.join(missing)} not set"
            )
