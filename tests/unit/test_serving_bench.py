"""`bench serve` runs end to end on the tiny model and prints its documented keys
(figures are reported by the command, never asserted here)."""

from __future__ import annotations

import json

import pytest

from solora_node import cli


def test_bench_serve_keys(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "serve", "--model", "tiny", "--json", "--threads", "1", "--clients", "1", "2"]
    argv += ["--requests", "1", "--routing-requests", "2", "--max-tokens", "2"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["levels"]) == {"1", "2"}
    for level in result["levels"].values():
        assert level["requests"] == level["clients"]
        assert level["latency_p50_ms"] <= level["latency_p95_ms"]
        assert level["requests_per_s"] > 0 and level["tokens_per_s"] > 0
    assert {"fixed_task_p50_ms", "auto_p50_ms", "cost_per_request_ms", "routing_pass_ms"} <= set(
        result["auto_routing"]
    )
    assert set(result["swap"]) == {"snapshot_ms", "install_ms"}
