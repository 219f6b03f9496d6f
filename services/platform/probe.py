"""A service's gRPC health, asked over TLS as its clients reach it.

``python -m services.platform.probe`` exits 0 while the service on ``CC_GRPC__ADDRESS``'s port
answers SERVING and 1 otherwise: the readiness and liveness probe a cluster runs in the pod (the
kubelet's own gRPC probe speaks no TLS). The launcher asks the same way.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.platform.identity import transport_credentials
from services.platform.settings import Settings


def health_of(
    address: str, credentials: grpc.ChannelCredentials, timeout_s: float = 1.0, server_name: str = ""
) -> int | None:
    """The health status a service reports, or None when nothing answers. ``server_name``: the name
    its certificate has, when ``address`` is another (a pod's probe of its own 127.0.0.1)."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    with grpc.secure_channel(address, credentials, options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.RpcError:
            return None
        return reply.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-name", default="", help="the name the service's certificate has")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    settings = Settings()
    port = settings.grpc.address.rpartition(":")[2]
    status = health_of(
        f"127.0.0.1:{port}", transport_credentials(settings.tls), args.timeout, args.server_name
    )
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
