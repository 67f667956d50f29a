"""Write an export folder: one PEFT LoRA folder per task, merged models, routing codes, manifest.

  manifest.json              where it came from (federation, fingerprint, round, base model)
                             and what is inside (per task: adapter folder, slots, mask id)
  adapters/<task>/           adapter_config.json + adapter_model.safetensors (stock PEFT)
  merged/<task>/             with --merged: base model + that expert, save_pretrained format
  routing.safetensors        "<task>/<layer>" -> mu_t, the codes of the `auto` gate
The folder is staged beside `out` and renamed into place: a failed export leaves nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import save_file

from solora_node.adapter.checkpoint import LoadedCheckpoint
from solora_node.adapter.errors import CheckpointError, UnknownTaskError
from solora_node.adapter.export import export_peft
from solora_node.adapter.routing import DEFAULT_BETA, DEFAULT_RIDGE
from solora_node.data_dir import find_adapter
from solora_node.model import DEFAULT_MODEL_NAME, load_base_model, prepared_dir

FORMAT = "solora-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ADAPTERS = "adapters"
MERGED = "merged"
ROUTING = "routing.safetensors"


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    merged_tokens_equal: dict[str, bool] = field(default_factory=dict)


def select_tasks(tasks: Sequence[str], wanted: str | None) -> list[str]:
    """All tasks (wanted None) or the one named; an unknown name is a one-line error."""
    if wanted is None:
        return list(tasks)
    if wanted not in tasks:
        raise UnknownTaskError(f"--task {wanted!r}: expected one of the checkpoint's {list(tasks)}")
    return [wanted]


def check_out_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"--out {out}: exists and is not empty; expected a new folder")


def base_reference(name: str, cache_dir: Path) -> str:
    """What PEFT's base_model_name_or_path should say: a folder a user can load, if any."""
    if name == "default":
        return str(prepared_dir(cache_dir, DEFAULT_MODEL_NAME))
    return name  # a local HF folder, or "tiny" (built in code; no folder exists)


def write_export(
    loaded: LoadedCheckpoint,
    source: Path,
    out: Path,
    tasks: Sequence[str],
    cache_dir: Path,
    merged: bool = False,
) -> ExportResult:
    """Export `tasks` of a loaded checkpoint into `out` (a new folder)."""
    check_out_folder(out)
    so, manifest = loaded.so, loaded.manifest
    base_ref = manifest["base_model"]
    base_path = base_reference(str(base_ref.get("name")), cache_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        entries: dict[str, dict[str, Any]] = {}
        for task in tasks:
            export_peft(so, task, staging / ADAPTERS / task, base_path)
            index = so.tasks.index(task)
            entries[task] = {
                "adapter": f"{ADAPTERS}/{task}",
                "merged": f"{MERGED}/{task}" if merged else None,
                "rank_slots": [index * so.config.rank, (index + 1) * so.config.rank],
                "mask_id": so.mask_id(task) if so.has_mask(task) else None,
                "routing_code": task in so.codes,
            }
            if merged:
                merge_expert(
                    staging / ADAPTERS / task, staging / MERGED / task, base_ref, cache_dir
                )
        codes = {
            f"{t}/{layer}": code.detach().cpu().to(torch.float32).contiguous()
            for t, per_layer in so.codes.items()
            for layer, code in per_layer.items()
        }
        save_file(codes, str(staging / ROUTING))
        export_manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "source": str(find_adapter(source).resolve()),
            "round": manifest.get("round"),
            "base_model": {**base_ref, "path": base_path},
            "federation": manifest["federation"],
            "fingerprint": manifest["fingerprint"],
            "tasks": entries,
            "routing": {
                "codes": ROUTING,
                "code_layers": list(so.code_layers),
                "tasks_with_codes": sorted(so.codes),
                "ridge": DEFAULT_RIDGE,
                "beta": DEFAULT_BETA,
            },
        }
        (staging / MANIFEST).write_text(
            json.dumps(export_manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        # mkdtemp makes a private folder; an export is meant to be read by other tools/users.
        for path in (staging, *staging.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            out.rmdir()  # empty (checked above)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out=out, manifest=export_manifest)


def merge_expert(adapter: Path, target: Path, base_ref: dict[str, Any], cache_dir: Path) -> Path:
    """Base model + one exported expert merged by stock PEFT, saved as a standalone model."""
    base = load_base_model(str(base_ref.get("name")), cache_dir, seed=int(base_ref.get("seed", 0)))
    merged = PeftModel.from_pretrained(base.model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(target), safe_serialization=True)  # type: ignore[operator]
    base.tokenizer.save_pretrained(str(target))
    return target
