"""JSON logs: Python warnings, native writes to fd 2 and plain stderr prints all come out
as one JSON object per line (a subprocess, since the capture takes over fd 2)."""

from __future__ import annotations

import json
import subprocess
import sys

from solora_node.native_stderr import GRPC_CORE_LOGGER, NATIVE_LOGGER, parse_line

SCRIPT = r"""
import os, sys, warnings, logging
from solora_node import logs
from solora_node.native_stderr import capture_native_stderr
logs.configure("info", json_lines=WRAP, node_id="n1", stream=capture_native_stderr(WRAP))
warnings.warn("careful: deprecated thing")
os.write(2, b"E1202 15:04:05.123456   123 ssl_transport_security.cc:1653] Handshake failed\n")
print("a plain line from somewhere", file=sys.stderr)
logging.getLogger("solora_node.x").info("own record")
"""


def _stderr_lines(wrap: bool) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("WRAP", str(wrap))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_json_mode_turns_every_stderr_line_into_one_object() -> None:
    entries = [json.loads(line) for line in _stderr_lines(True)]
    by_logger = {e["logger"]: e for e in entries}
    assert set(by_logger) == {"py.warnings", GRPC_CORE_LOGGER, NATIVE_LOGGER, "solora_node.x"}
    assert "careful: deprecated thing" in by_logger["py.warnings"]["msg"]
    assert by_logger[GRPC_CORE_LOGGER]["level"] == "error"
    assert by_logger[GRPC_CORE_LOGGER]["msg"].startswith("Handshake failed")
    assert by_logger[NATIVE_LOGGER]["msg"] == "a plain line from somewhere"


def test_text_mode_passes_plain_lines_through_unchanged() -> None:
    lines = _stderr_lines(False)
    assert "a plain line from somewhere" in lines
    assert any("grpc.core: Handshake failed" in line for line in lines)


def test_parse_line_knows_glog_json_and_plain() -> None:
    assert parse_line('{"msg": "x"}\n') is None
    assert parse_line("   \n") is None
    assert parse_line("W1202 01:02:03.000004 7 a.cc:9] slow\n") == (
        GRPC_CORE_LOGGER,
        30,
        "slow (a.cc:9)",
    )
    assert parse_line("hello\n") == (NATIVE_LOGGER, 30, "hello")
