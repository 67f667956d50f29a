"""Container health check: ask the node's grpc.health.v1 service on loopback.

Exit 0 when the server answers SERVING, 1 otherwise (Docker's HEALTHCHECK
contract). The config is read the way the daemon reads it (the YAML file in
$SOLORA_CONFIG plus SOLORA_* environment overrides), so the probe dials the
node's real port with the node's own certificate as its TLS client identity.
`--set` flags given to `solora-node run` are invisible here: put fields the
probe needs (network.port, network.tls.*, network.insecure) in the file or env.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from solora_node.config import load_config

DEFAULT_CONFIG = "/etc/solora-node/node.yaml"
TIMEOUT_S = float(os.environ.get("SOLORA_HEALTH_TIMEOUT_S", "5"))
# "" is the whole server's status in the grpc.health.v1 convention.
SERVICE = os.environ.get("SOLORA_HEALTH_SERVICE", "")


def _channel(config_path: Path) -> grpc.Channel:
    cfg = load_config(config_path)
    port = cfg.network.port
    if port == 0:
        raise ValueError("network.port is 0 (ephemeral): the probe cannot know which port to dial")
    target = f"127.0.0.1:{port}"
    if cfg.network.insecure:
        return grpc.insecure_channel(target)
    tls = cfg.network.tls
    assert tls.ca_cert and tls.cert and tls.key  # load_config refuses TLS without them
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_cert.read_bytes(),
        private_key=tls.key.read_bytes(),
        certificate_chain=tls.cert.read_bytes(),
    )
    # We dial 127.0.0.1, but the server certificate names the node id.
    options = [("grpc.ssl_target_name_override", cfg.node.id)]
    return grpc.secure_channel(target, credentials, options=options)


def main() -> int:
    config_path = Path(os.environ.get("SOLORA_CONFIG", DEFAULT_CONFIG))
    try:
        with _channel(config_path) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT_S
            )
    except grpc.RpcError as err:
        print(f"unhealthy: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except Exception as err:  # a probe reports, it never raises
        print(f"unhealthy: {err}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
