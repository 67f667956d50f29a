"""The namespace testbed's command line: what `status` prints and how errors come out.
(The testbed itself runs in tests/netns/, as root.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from solora_node.testbed import netns_cli


def _host(name: str, **over: object) -> dict[str, object]:
    host: dict[str, object] = {
        "host": name,
        "address": "10.77.0.1",
        "task": "arithmetic",
        "pid": 4242,
        "running": True,
        "link_up": True,
        "rate": None,
        "loss": 0,
        "round": 7.0,
        "live_peers": 2.0,
        "cluster_size": 3.0,
        "blocks_held": 4.0,
        "bytes_sent": 1234.0,
    }
    return host | over


def test_status_table_marks_down_links_gone_processes_and_impairments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = {
        "name": "demo",
        "bridge_namespace": "snt-demo-br",
        "bridge_address": "10.77.0.254",
        "work_dir": "/tmp/solora-netns-demo",
        "hosts": [
            _host("h1"),
            _host("h2", link_up=False, running=False, rate="2mbit", loss=5, round=None),
        ],
        "prometheus": {"url": "http://10.77.0.254:9090", "pid": 99, "running": False},
    }
    netns_cli.print_status(status)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("testbed demo  bridge snt-demo-br (10.77.0.254)")
    h1 = next(line for line in lines if line.startswith("h1 ")).split()
    h2 = next(line for line in lines if line.startswith("h2 ")).split()
    assert h1[3:6] == ["4242", "up", "-"] and h1[6] == "7"
    assert h2[3:8] == ["4242", "(gone)", "DOWN", "2mbit,5%", "-"]
    assert "prometheus http://10.77.0.254:9090 (pid 99, gone;" in lines[-1]


def test_status_of_a_testbed_that_is_not_up_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netns_cli, "require_root", lambda: None)
    code = netns_cli.main(["status", "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"error: no testbed state at {tmp_path / 'state.json'} (is it up?)"]


def test_the_documented_module_command_still_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "solora_node.testbed.netns", "impair", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--clear" in done.stdout and "percent dropped each way" in done.stdout
