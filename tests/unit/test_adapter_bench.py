"""The adapter's benchmarks run on the tiny model and print the documented keys
(figures are reported by `solora-node bench`, never asserted here)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from solora_node import cli


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main(["bench", *argv, "--model", "tiny", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, dict)
    return result


def test_bench_payload_keys_and_ordering(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench(capsys, "payload")
    methods = result["methods"]
    assert set(methods) == {"lora", "lori", "solora"}
    sizes = {name: methods[name]["bytes_per_round"] for name in methods}
    assert all(isinstance(v, int) and v > 0 for v in sizes.values())
    assert sizes["solora"] < sizes["lori"] < sizes["lora"]
    assert result["reduction_vs_lora"] == pytest.approx(1 - sizes["solora"] / sizes["lora"])


def test_bench_train_keys(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench(capsys, "train", "--steps", "2", "--warmup", "0", "--threads", "1,2")
    assert set(result["threads"]) == {"1", "2"}
    for figures in result["threads"].values():
        seconds = figures["step_seconds"]
        assert set(seconds) == {"peft_lora", "solora"}
        assert seconds["solora"]["min"] <= seconds["solora"]["median"]
        assert figures["ratio_min"] == pytest.approx(
            seconds["solora"]["min"] / seconds["peft_lora"]["min"]
        )


def test_bench_routing_keys(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--code-examples", "4", "--eval-examples", "4", "--threads", "1"]
    result = _bench(capsys, "routing", "--tasks", "arithmetic", "reverse", *argv)
    assert result["eval_examples"] == 8 and 0.0 <= float(result["accuracy"]) <= 1.0
    assert set(result["per_task"]) == {"arithmetic", "reverse"}
