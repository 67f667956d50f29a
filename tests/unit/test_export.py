"""`solora-node export`: stock PEFT loads every expert with SO-LoRA's one-hot logits, the
merged model decodes the adapter's greedy tokens, the manifest traces the source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from solora_node import cli
from solora_node.adapter.checkpoint import load_checkpoint
from solora_node.adapter.prompts import prompt_batch
from solora_node.export.verify import PROBE_PROMPTS, greedy_tokens
from solora_node.model import tiny_model
from tests.unit.test_adapter_helpers import TASKS
from tests.unit.tiny_checkpoint import write_tiny_checkpoint

TOLERANCE = 1e-4  # fp32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node's data_dir: the adapter checkpoint sits in data_dir/adapter."""
    root = tmp_path_factory.mktemp("node")
    write_tiny_checkpoint(root / "adapter", round_=17)
    return root


@pytest.fixture(scope="module")
def export_all(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("exports") / "all"
    code = cli.main(["export", "--checkpoint", str(data_dir), "--all", "--out", str(out), "--json"])
    assert code == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_every_expert_loads_in_stock_peft_with_one_hot_logits(
    export_all: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    out, _ = export_all
    ours = load_checkpoint(data_dir, tmp_path)
    base = tiny_model(seed=0)
    peft = PeftModel.from_pretrained(base.model, str(out / "adapters" / TASKS[0]), TASKS[0])
    for task in TASKS[1:]:
        peft.load_adapter(str(out / "adapters" / task), adapter_name=task)
    batch = prompt_batch(base.tokenizer, [*PROBE_PROMPTS, "Bonjour madame"])
    differences = {}
    with torch.no_grad():
        ours.so.use_base()
        plain = ours.so.model(**batch).logits
        for task in TASKS:
            peft.set_adapter(task)
            ours.so.use_task(task)
            expert = ours.so.model(**batch).logits
            differences[task] = float((peft(**batch).logits - expert).abs().max())
            assert (expert - plain).abs().max() > 1e-2  # the expert really changes the output
    print("max abs logit difference, stock PEFT vs SO-LoRA one-hot:", differences)
    assert max(differences.values()) < TOLERANCE, differences


def test_manifest_traces_the_federation_state(
    export_all: tuple[Path, dict], data_dir: Path
) -> None:
    out, manifest = export_all
    source = json.loads((data_dir / "adapter" / "manifest.json").read_text())
    assert manifest["format"] == "solora-export"
    assert manifest["round"] == 17
    assert manifest["fingerprint"] == source["fingerprint"]
    assert manifest["federation"]["tasks"] == list(TASKS)
    assert manifest["base_model"]["name"] == "tiny"
    assert manifest["source"] == str((data_dir / "adapter").resolve())
    for index, task in enumerate(TASKS):
        entry = manifest["tasks"][task]
        assert entry["rank_slots"] == [index * 4, (index + 1) * 4]
        assert entry["mask_id"] == source["mask_ids"][task]
        assert (out / entry["adapter"] / "adapter_config.json").is_file()
        assert (out / entry["adapter"] / "adapter_model.safetensors").is_file()
    assert manifest["routing"]["tasks_with_codes"] == sorted(TASKS)
    assert (out / manifest["routing"]["codes"]).is_file()


def test_merged_model_gives_the_adapters_greedy_tokens(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "merged"
    task = TASKS[1]
    argv = ["export", "--checkpoint", str(data_dir / "adapter"), "--task", task]
    assert cli.main([*argv, "--out", str(out), "--merged", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"] == [task]
    assert report["max_abs_logit_diff"][task] < TOLERANCE
    assert report["expert_vs_base_max_abs_logit_diff"][task] > 1e-2  # a meaningful comparison
    assert report["merged_greedy_tokens_equal"] == {task: True}
    # Checked here too, independently of the command's own report.
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged" / task))
    assert not any("lora" in name for name, _ in merged.named_parameters())
    base = tiny_model(seed=0)
    peft = PeftModel.from_pretrained(base.model, str(out / "adapters" / task))
    for text in PROBE_PROMPTS:
        assert greedy_tokens(merged, base.tokenizer, text) == greedy_tokens(
            peft, base.tokenizer, text
        )


def test_export_errors_are_one_line_and_leave_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*argv: str) -> str:
        assert cli.main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    out = str(tmp_path / "out")
    assert "--task 'nope'" in run("--checkpoint", str(data_dir), "--task", "nope", "--out", out)
    assert "data_dir" in run("--checkpoint", str(tmp_path), "--all", "--out", out)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    assert "not empty" in run("--checkpoint", str(data_dir), "--all", "--out", str(busy))
    assert (busy / "x").read_text() == "keep me"
    broken = tmp_path / "broken"
    shutil.copytree(data_dir / "adapter", broken)
    (broken / "blocks.safetensors").write_bytes(b"not safetensors")
    assert "checksum mismatch" in run("--checkpoint", str(broken), "--all", "--out", out)
    assert not Path(out).exists()
