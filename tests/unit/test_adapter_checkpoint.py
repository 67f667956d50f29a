"""Adapter checkpoints and `solora-node infer`: round trip, gate choices, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from solora_node import cli
from solora_node.adapter.checkpoint import CheckpointError, load_checkpoint
from solora_node.adapter.prompts import prompt_batch
from tests.unit.test_adapter_helpers import TASKS, tiny_federation
from tests.unit.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "adapter")
    assert write_tiny_checkpoint(folder) == folder  # overwrite is atomic
    return folder


def test_checkpoint_round_trip(checkpoint: Path, tmp_path: Path) -> None:
    loaded, so = tiny_federation()
    restored = load_checkpoint(checkpoint, tmp_path)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["fingerprint"] == so.fingerprint == restored.so.fingerprint
    assert set(manifest["mask_ids"]) == set(TASKS)
    batch = prompt_batch(loaded.tokenizer, ["What is 2 + 2?", "Bonjour madame"])
    for task in TASKS:
        assert restored.so.mask_id(task) == manifest["mask_ids"][task]
        assert set(restored.so.codes[task]) == set(restored.so.code_layers)
    restored.so.use_merge()
    with torch.no_grad():
        merged = restored.so.model(**batch).logits
        restored.so.use_base()
        base = restored.so.model(**batch).logits
    assert (merged - base).abs().max() > 1e-4  # the blocks really are loaded


@pytest.mark.parametrize("task", ["arith", "merge", "base", "auto"])
def test_infer_generates_with_each_gate(
    checkpoint: Path, task: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["infer", "--checkpoint", str(checkpoint), "--task", task, "--threads", "1"]
    code = cli.main([*argv, "--max-new-tokens", "4", "--json", "What is 12 + 30?"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result["text"], str)
    if task == "auto":
        assert result["gate"] == {"mode": "task", "task": "arith"}
        assert max(result["routing"], key=result["routing"].get) == "arith"
    elif task == "arith":
        assert result["gate"] == {"mode": "task", "task": "arith"}
    else:
        assert result["gate"] == {"mode": "merge" if task == "merge" else "off"}


def test_infer_errors_are_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(folder: Path, task: str = "auto") -> str:
        argv = ["infer", "--checkpoint", str(folder), "--task", task, "--threads", "1"]
        code = cli.main([*argv, "hello"])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    assert "no such folder" in run(tmp_path / "nowhere")
    assert "no adapter here" in run(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    assert "not readable JSON" in run(tmp_path)
    assert "--task 'poetry'" in run(checkpoint, "poetry")
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["federation"]["seed"] += 1
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert "fingerprint" in run(broken)


def test_missing_tensor_file_is_a_checkpoint_error(checkpoint: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "manifest.json").write_text((checkpoint / "manifest.json").read_text())
    with pytest.raises(CheckpointError, match=r"blocks\.safetensors not found"):
        load_checkpoint(partial, tmp_path)


def test_infer_refuses_a_corrupted_tensor_file(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    assert set(json.loads((copy / "manifest.json").read_text())["checksums"]) == {
        "blocks.safetensors",
        "masks.safetensors",
        "codes.safetensors",
    }
    blocks = bytearray((copy / "blocks.safetensors").read_bytes())
    blocks[-3] ^= 0x01  # one bit of one weight: still parses, would answer differently
    (copy / "blocks.safetensors").write_bytes(bytes(blocks))
    code = cli.main(["infer", "--checkpoint", str(copy), "--task", "arith", "hello"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"{copy / 'blocks.safetensors'}: checksum mismatch" in err
