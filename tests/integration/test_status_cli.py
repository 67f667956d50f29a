"""`solora-node status` against a real peer process over mutual TLS, config from $SOLORA_CONFIG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from solora_node.net.security import init_ca, issue_node_cert, tls_section
from solora_node.testing.loopback import LoopbackPeer

TASK = "arithmetic"
LAYOUT = {"model.layers.0.q_proj": [64, 8]}


def _status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "solora_node", "status", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_status_finds_tls_material_through_the_environment(tmp_path: Path) -> None:
    init_ca(tmp_path, "status-federation")
    for node in ("target", "operator"):
        issue_node_cert(tmp_path, node)
    config = tmp_path / "operator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node": {"id": "operator"},
                "federation": {"id": "status-federation", "tasks": [TASK]},
                "task": {"name": TASK},
                "network": {"tls": tls_section(tmp_path, "operator")},
            }
        ),
        encoding="utf-8",
    )
    spec = {
        "node_id": "target",
        "task": TASK,
        "layouts": {TASK: LAYOUT},
        "round": 7,
        "tls_dir": str(tmp_path),
    }
    env = dict(os.environ, SOLORA_CONFIG=str(config))
    with LoopbackPeer(spec) as target:
        out = _status(env, "--addr", target.address, "--json")
        plaintext = _status(env, "--addr", target.address, "--insecure")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert (reply["node_id"], reply["task"], reply["round"]) == ("target", TASK, 7)
    # A TLS node does not answer a plaintext client: one line, non-zero exit.
    assert plaintext.returncode == 2
    assert len(plaintext.stderr.strip().splitlines()) == 1, plaintext.stderr
