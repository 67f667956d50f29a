"""Which node config a client command reads: --config, then $SOLORA_CONFIG, then the systemd path.

Commands that talk to a running node (status) need its TLS material; an operator
on the node's box should not have to repeat where the config lives. The order is
the one docs/operations.md documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from solora_node.errors import SoloraError

CONFIG_ENV = "SOLORA_CONFIG"
# Where deploy/systemd/solora-node.service and deploy/Dockerfile put the node's config.
DEFAULT_CONFIG_PATH = Path("/etc/solora-node/node.yaml")


def locate_node_config(
    explicit: Path | None,
    environ: Mapping[str, str],
    default: Path = DEFAULT_CONFIG_PATH,
) -> tuple[Path | None, list[str]]:
    """The config to read (or None) and, per place looked at, what was found there.

    An explicit --config or a set $SOLORA_CONFIG that names no file is an error:
    the operator asked for that file, so falling through to another would mislead.
    """
    tried: list[str] = []
    if explicit is not None:
        if not explicit.is_file():
            raise SoloraError(f"--config {explicit}: no such file (expected a node YAML config)")
        return explicit, tried
    tried.append("--config (not given)")
    from_env = environ.get(CONFIG_ENV, "")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise SoloraError(
                f"${CONFIG_ENV}={from_env}: no such file (expected a node YAML config)"
            )
        return path, tried
    tried.append(f"${CONFIG_ENV} (not set)")
    if default.is_file():
        return default, tried
    tried.append(f"{default} (not found)")
    return None, tried
