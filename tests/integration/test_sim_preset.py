"""`solora-node sim --preset paper-tiny --json` end to end: numbers internally consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from solora_node.model import tiny_model
from solora_node.net.codec import encode_delta
from solora_node.protocol.blocks import BlockDelta, BlockVersion, RawTensor
from solora_node.sim.config import PRESETS


def _lora_message_bytes(round_: int, origin: str) -> int:
    """One LoRA-DFL message built here from the tiny model's shapes, sized by the codec."""
    c = PRESETS["paper-tiny"]
    model = get_peft_model(
        tiny_model().model,
        LoraConfig(r=c.rank, lora_alpha=int(c.alpha), target_modules=list(c.target_modules)),
    )
    layers: dict[str, RawTensor] = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, torch.nn.ModuleDict):
            base = name.removeprefix("base_model.model.")
            for part in ("lora_A", "lora_B"):
                weight = getattr(module, part)["default"].weight
                layers[f"{base}.{part}"] = RawTensor(
                    "float32", tuple(weight.shape), bytes(4 * weight.numel())
                )
    delta = BlockDelta(BlockVersion("shared", round_, origin), "", "float32", layers)
    return len(encode_delta(delta))


def test_paper_tiny_preset(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "solora_node",
            "sim",
            "--preset",
            "paper-tiny",
            "--json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert summary["preset"] == "paper-tiny" and summary["seed"] == 0
    assert set(summary["methods"]) == {"lora", "lori", "solora", "hard_moe", "local"}
    for entry in summary["methods"].values():
        assert 0.0 <= entry["avg_accuracy"] <= 1.0
        assert all(0.0 <= a <= 1.0 for a in entry["per_task"].values())
    assert summary["methods"]["local"]["bytes_total"] == 0
    assert summary["methods"]["solora"]["bytes_total"] < summary["methods"]["lora"]["bytes_total"]

    results = json.loads((tmp_path / "results.json").read_text())
    for name in (
        "accuracy_vs_bytes.png",
        "per_task_accuracy.png",
        "topology.png",
        "gap_vs_consensus.png",
        "results.md",
    ):
        assert (tmp_path / name).stat().st_size > 0
    # Every method and the ablation were scored on the same eval sets.
    expected = {t: s["fingerprint"] for t, s in results["eval_sets"].items()}
    for run in [*results["methods"].values(), *results["ablation"].values()]:
        assert run["eval_sets"] == expected
    # LoRA's bytes, recomputed from the codec: every device sends its A and B to each
    # neighbour every round (origins dev-00.. have equal lengths, so messages are equal).
    lora = results["methods"]["lora"]
    directed_edges = 2 * len(results["topology"]["edges"])
    for entry in lora["rounds"]:
        assert entry["messages"] == directed_edges
        assert entry["bytes"] == directed_edges * _lora_message_bytes(entry["round"], "dev-00")
    assert lora["bytes_total"] == sum(e["bytes"] for e in lora["rounds"])
    solora = results["methods"]["solora"]
    assert solora["collision_rate"]["cross_task"] == 0.0
    assert solora["collision_rate"]["same_task"] == 1.0
    assert 0.0 <= solora["routing_accuracy"] <= 1.0
    assert 0.0 <= solora["avg_accuracy_oracle"] <= 1.0
