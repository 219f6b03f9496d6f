"""Composition root of the no-op service: settings in, a gRPC server with health and reflection out."""

from __future__ import annotations

import logging
import sys

from services.platform.grpc_server import create_server, serve, stop_on_signals
from services.platform.preflight import KafkaUnreachable, require_kafka
from services.platform.settings import Settings
from services.platform.telemetry import server_interceptors, setup_telemetry

DEFAULT_SERVICE_NAME = "noop"

log = logging.getLogger("services.noop")


def main() -> int:
    stop = stop_on_signals()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    named = "service_name" in settings.model_fields_set
    service_name = settings.service_name if named else DEFAULT_SERVICE_NAME
    try:
        settings.require_cluster_addresses()
        require_kafka(settings.kafka)
    except (ValueError, KafkaUnreachable) as error:
        log.error("%s cannot start: %s", service_name, error)
        return 1

    telemetry = setup_telemetry(settings.telemetry, service_name, settings.instance_id)
    try:
        server = create_server(
            settings.grpc.address,
            (),
            max_workers=settings.grpc.max_workers,
            interceptors=server_interceptors(telemetry.tracer_provider),
        )
        log.info("%s service serving on %s (port %d)", service_name, settings.grpc.address, server.port)
        serve(server, settings.grpc.grace_period_s, stop=stop)
    finally:
        telemetry.shutdown()
    log.info("%s service stopped", service_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
