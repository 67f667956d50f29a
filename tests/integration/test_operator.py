"""What an operator hits with one real node process: signals, ports in use, a full disk,
JSON logs. Each failure must be one line naming the config field, exit 2, no traceback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from solora_node.net.security import tls_section
from solora_node.testbed.local import LocalFederation, NodeSpec, make_ca
from tests.integration.federation import TINY_BASE, latest_checkpoint, metric, wait_until

SOLO: dict[str, Any] = {**TINY_BASE, "discovery": {"mdns": False}}


def _solo(tmp_path: Path, tls: bool = False, **overrides: Any) -> LocalFederation:
    spec = NodeSpec("solo", "arithmetic", overrides=overrides)
    return LocalFederation(tmp_path, [spec], SOLO, tls=tls)


def _log(fed: LocalFederation) -> str:
    return fed.nodes["solo"].log_path.read_text(errors="replace")


def test_sighup_is_a_graceful_stop_with_a_log_line(tmp_path: Path) -> None:
    with _solo(tmp_path) as fed:
        fed.start()
        fed.wait_ready()
        wait_until(lambda: metric(fed, "solo", "solora_round{}") >= 2, 60, "round 2")
        fed.signal("solo", signal.SIGHUP)
        assert fed.wait_exit("solo", 15) == 0, fed.tail("solo")
    assert "received SIGHUP: stopping gracefully" in _log(fed)
    assert "node solo stopped at round" in _log(fed)
    assert latest_checkpoint(tmp_path / "solo")[0] >= 2


@contextlib.contextmanager
def _listening_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("field", ["network.port", "metrics.port"])
def test_port_in_use_is_one_line_naming_the_field(tmp_path: Path, field: str) -> None:
    section, key = field.split(".")
    with _listening_port() as port, _solo(tmp_path, **{section: {key: port}}) as fed:
        fed.start()
        assert fed.wait_exit("solo", 60) == 2, fed.tail("solo")
    text = _log(fed)
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("solora-node run: error: ")
    assert field in last and str(port) in last and "already in use" in last
    assert not (tmp_path / "solo" / "node.json").exists()  # never announced as running


# ---------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs mounted for this test (root only), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Write until the disk is full, down to the last 4 KiB block."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler


def test_full_data_dir_at_start_is_one_line(tmp_path: Path, small_disk: Path) -> None:
    _fill(small_disk)
    with _solo(tmp_path, node={"data_dir": str(small_disk / "solo")}) as fed:
        fed.start()
        assert fed.wait_exit("solo", 60) == 2, fed.tail("solo")
    last = _log(fed).strip().splitlines()[-1]
    assert "Traceback" not in _log(fed)
    assert "node.data_dir" in last and "no space left on device" in last


def test_full_disk_mid_run_skips_checkpoints_and_resumes(tmp_path: Path, small_disk: Path) -> None:
    data_dir = small_disk / "solo"
    with _solo(tmp_path, node={"data_dir": str(data_dir)}) as fed:
        fed.nodes["solo"].data_dir = data_dir  # where node.json appears
        fed.start()
        fed.wait_ready()
        wait_until(lambda: metric(fed, "solo", "solora_round{}") >= 2, 60, "round 2")
        filler = _fill(small_disk)
        skipped = "solora_checkpoints_skipped_total{reason=no_space}"
        wait_until(lambda: metric(fed, "solo", skipped) >= 2, 60, "two skipped checkpoints")
        full_round = metric(fed, "solo", "solora_round{}")
        wait_until(
            lambda: metric(fed, "solo", "solora_round{}") >= full_round + 2, 60, "training on"
        )
        filler.unlink()
        wait_until(
            lambda: latest_checkpoint(data_dir)[0] > full_round, 60, "checkpoints written again"
        )
        fed.signal("solo", signal.SIGTERM)
        assert fed.wait_exit("solo", 15) == 0, fed.tail("solo")
    text = _log(fed)
    assert "Traceback" not in text
    assert "skipped (no_space" in text and "checkpoints written again" in text


# ---------------------------------------------------------------- JSON logs


def test_log_json_makes_every_line_one_json_object(tmp_path: Path) -> None:
    with _solo(tmp_path, tls=True, node={"log_json": True}) as fed:
        fed.start()
        fed.wait_ready()
        wait_until(lambda: metric(fed, "solo", "solora_round{}") >= 1, 60, "round 1")
        # Plaintext bytes at the TLS port: gRPC core logs the failed handshake itself.
        with socket.create_connection(("127.0.0.1", fed.nodes["solo"].grpc_port)) as probe:
            probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            probe.settimeout(5)
            with contextlib.suppress(OSError):
                probe.recv(100)
        fed.signal("solo", signal.SIGTERM)
        assert fed.wait_exit("solo", 15) == 0, fed.tail("solo")
    lines = [line for line in _log(fed).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line parses
    assert all(isinstance(e, dict) and {"level", "logger", "msg"} <= set(e) for e in entries)
    loggers = {e["logger"] for e in entries}
    assert "solora_node.node" in loggers
    assert "grpc.core" in loggers  # the failed TLS handshake, as gRPC core logged it


# ---------------------------------------------------------------- certificates while running


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_foreign_ca_peer_is_explained_counted_and_shown_in_status(tmp_path: Path) -> None:
    a1_port, rogue_port = _free_ports(2)
    specs = [
        NodeSpec("a1", "arithmetic", overrides={"network": {"port": a1_port}}),
        NodeSpec("rogue", "arithmetic", overrides={"network": {"port": rogue_port}}),
    ]
    with LocalFederation(tmp_path, specs, SOLO, tls=True) as fed:
        # rogue's files are consistent (its own CA), so it starts; it and the federation
        # do not trust each other. Each dials the other (bootstrap).
        other_ca = make_ca(tmp_path / "other", SOLO["federation"]["id"], ["rogue"])
        fed.reconfigure(
            "rogue",
            {"network": {"tls": tls_section(other_ca, "rogue"),
                         "bootstrap_peers": [f"127.0.0.1:{a1_port}"]}},
        )  # fmt: skip
        fed.reconfigure("a1", {"network": {"bootstrap_peers": [f"127.0.0.1:{rogue_port}"]}})
        fed.start()
        fed.wait_ready()
        failures = "solora_tls_handshake_failures_total{reason=unknown_ca}"
        for node_id in ("a1", "rogue"):
            wait_until(lambda n=node_id: metric(fed, n, failures) >= 1, 60, f"{node_id} counts")
        assert metric(fed, "a1", "solora_peers{state=live}") == 0  # never a member
        expiry = metric(fed, "a1", "solora_certificate_expiry_timestamp_seconds{}")
        assert expiry > time.time() + 800 * 86400
        done = subprocess.run(
            [sys.executable, "-m", "solora_node", "status", "--json",
             "--addr", f"127.0.0.1:{a1_port}",
             "--config", str(fed.nodes["a1"].config_path), "--node-id", "a1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "unknown_ca=" in json.loads(done.stdout)["details"]["tls_failures"]
        fed.stop()
    for node_id in ("a1", "rogue"):
        text = fed.nodes[node_id].log_path.read_text(errors="replace")
        assert "TLS handshake failed: the peer's certificate is not from our federation CA" in text
        assert "not_authorised" not in text
