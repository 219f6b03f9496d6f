"""Start-up checks a service runs before it serves, so a wrong address fails fast with a clear message."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.platform.settings import KafkaSettings

# Below librdkafka's error level (3): the probe retries a refused connection every few milliseconds, and
# its outcome is reported once, as KafkaUnreachable.
_QUIET_LOG_LEVEL = 2


class KafkaUnreachable(Exception):
    """No broker answered a metadata request in time."""


def require_kafka(kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Ask the cluster for its metadata; raise ``KafkaUnreachable`` naming the bootstrap servers if no
    broker answers within ``timeout_s``."""
    admin = AdminClient(
        {
            **kafka.client_config(),
            "client.id": f"{kafka.client_id_prefix}-preflight",
            "log_level": _QUIET_LOG_LEVEL,
        }
    )
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise KafkaUnreachable(
            f"Kafka is not reachable at {kafka.bootstrap_servers} ({kafka.security_protocol}) "
            f"within {timeout_s:g}s: {error.args[0].str()}. Is the broker running "
            f"(make kafka-up), or is CC_KAFKA__BOOTSTRAP_SERVERS wrong?"
        ) from error
