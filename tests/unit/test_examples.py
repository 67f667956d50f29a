"""The worked example under deploy/examples/ is accepted by `run`'s config and data loaders
and by `sim`, from any working directory; JSONL with a UTF-8 BOM loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from solora_node.config import load_config
from solora_node.data.jsonl import load_jsonl
from solora_node.data.tasks import load_task
from solora_node.sim.config import load_sim_config
from solora_node.sim.devices import build_devices

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "intents"


def test_run_accepts_the_example_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(EXAMPLE / "node.yaml", [], environ={})
    assert cfg.task.train_file == EXAMPLE / "train.jsonl"
    assert cfg.node.data_dir == EXAMPLE / "state" / "intents-1"
    data = load_task(cfg.task, seed=cfg.federation.seed)
    assert data.kind == "label" and len(data.labels) == 6
    assert len(data.train) == 240 and len(data.eval) == 48
    assert not {ex.input for ex in data.train} & {ex.input for ex in data.eval}


def test_sim_accepts_the_example_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_sim_config(EXAMPLE / "sim.yaml")
    devices = build_devices(config)
    intents = [d for d in devices if d.task == "intents"]
    assert len(intents) == 2 and intents[0].data.kind == "label"
    first, second = ({ex.input for ex in d.data.train} for d in intents)
    assert not first & second  # disjoint shards


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n')
    assert [ex.input for ex in load_jsonl(path)] == ["a", "c"]


def test_bench_help_lists_every_benchmark_the_readme_lists() -> None:
    from solora_node.cli import COMMANDS
    from solora_node.commands.bench import BENCHMARKS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (listed,) = re.findall(r"solora-node bench ([a-z|]+)", readme)
    assert set(listed.split("|")) == set(BENCHMARKS)
    for name in BENCHMARKS:
        assert name in COMMANDS["bench"]
