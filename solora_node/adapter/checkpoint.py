"""Adapter checkpoints for `infer`: a folder with a JSON manifest and safetensors (no pickle).

  manifest.json       base model, federation (id, seed, tasks, rank, alpha, target modules),
                      code layers, projection fingerprint, layer shapes, mask ids, round
  blocks.safetensors  "<task>/<layer>" -> B_t (d_out x r)
  masks.safetensors   "<task>/<layer>" -> uint8 0/1 (tasks with an installed mask)
  codes.safetensors   "<task>/<layer>" -> mu_t (d_in)
The manifest's "checksums" holds the sha256 of each .safetensors file (adapter/integrity.py).
A is not stored: it is regenerated from the seed, and the fingerprint proves it matches.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from solora_node.adapter.errors import AdapterError, CheckpointError
from solora_node.adapter.integrity import CHECKSUMS, file_checksums, read_verified
from solora_node.adapter.model import SoLoraModel, inject
from solora_node.adapter.spec import SoLoraConfig
from solora_node.data_dir import ADAPTER_DIR, find_adapter
from solora_node.model import LoadedModel, load_base_model

FORMAT = "solora-adapter"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BLOCKS = "blocks.safetensors"
MASKS = "masks.safetensors"
CODES = "codes.safetensors"
TENSOR_FILES = (BLOCKS, MASKS, CODES)


@dataclass
class LoadedCheckpoint:
    so: SoLoraModel
    base: LoadedModel
    manifest: dict[str, Any]


def _key(task: str, layer: str) -> str:
    return f"{task}/{layer}"


def save_checkpoint(
    so: SoLoraModel,
    folder: Path,
    base_model: str,
    federation_id: str = "",
    base_seed: int = 0,
    round_: int | None = None,
) -> Path:
    """Write the checkpoint atomically (staged beside `folder`, then renamed over it)."""
    cfg = so.config
    mask_ids = {t: so.mask_id(t) for t in cfg.tasks if so.has_mask(t)}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "base_model": {"name": base_model, "seed": base_seed},
        "federation": {
            "id": federation_id,
            "seed": cfg.seed,
            "tasks": list(cfg.tasks),
            "rank": cfg.rank,
            "alpha": cfg.alpha,
            "target_modules": list(cfg.target_modules),
        },
        "code_layers": list(so.code_layers),
        "fingerprint": so.fingerprint,
        "layers": {name: list(shape) for name, shape in so.shapes.items()},
        "mask_ids": mask_ids,
        "codes": sorted(so.codes),
        "round": round_,  # the federation round these blocks are from (None: not a node's)
    }
    blocks = {
        _key(t, n): layer.lora_B[t].detach().cpu().contiguous()
        for t in cfg.tasks
        for n, layer in so.layers.items()
    }
    masks = {
        _key(t, n): mask.to(torch.uint8).cpu().contiguous()
        for t in mask_ids
        for n, mask in so.masks(t).items()
    }
    codes = {
        _key(t, n): c.detach().cpu().to(torch.float32).contiguous()
        for t, per in so.codes.items()
        for n, c in per.items()
    }
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        save_file(blocks, str(staging / BLOCKS))
        save_file(masks, str(staging / MASKS))
        save_file(codes, str(staging / CODES))
        manifest[CHECKSUMS] = file_checksums(staging, TENSOR_FILES)
        (staging / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        # mkdtemp makes the folder private and safetensors writes 0600 files; `infer` may
        # run as another user than the daemon, and adapter weights are no secret.
        for path in (staging, *staging.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def read_manifest(folder: Path) -> dict[str, Any]:
    folder = find_adapter(folder)
    path = folder / MANIFEST
    if not Path(folder).is_dir():
        raise CheckpointError(f"checkpoint {folder}: folder not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {folder}: {MANIFEST} not found; expected an adapter folder written by "
            f"solora-node or a node's data_dir (with {ADAPTER_DIR}/{MANIFEST})"
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format must be {FORMAT!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: version {manifest.get('version')!r}, expected {FORMAT_VERSION}"
        )
    for key in ("base_model", "federation", "fingerprint", "layers", "code_layers", "mask_ids"):
        if key not in manifest:
            raise CheckpointError(f"checkpoint {path}: missing field {key!r}")
    return manifest


def config_from_manifest(manifest: dict[str, Any]) -> SoLoraConfig:
    fed = manifest["federation"]
    try:
        return SoLoraConfig(
            seed=int(fed["seed"]),
            tasks=tuple(str(t) for t in fed["tasks"]),
            rank=int(fed["rank"]),
            alpha=float(fed["alpha"]),
            target_modules=tuple(str(m) for m in fed["target_modules"]),
            code_layers=tuple(str(n) for n in manifest["code_layers"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint manifest: bad federation field ({exc})") from None


def _tensors(folder: Path, name: str, data: bytes) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(data)
    except SafetensorError as exc:
        raise CheckpointError(
            f"checkpoint {folder / name}: not a safetensors file ({exc})"
        ) from None


def load_checkpoint(folder: Path, cache_dir: Path) -> LoadedCheckpoint:
    """Base model + injected adapter with every block, mask and code of the checkpoint."""
    folder = find_adapter(folder)
    manifest = read_manifest(folder)
    config = config_from_manifest(manifest)
    base_ref = manifest["base_model"]
    base = load_base_model(str(base_ref.get("name")), cache_dir, seed=int(base_ref.get("seed", 0)))
    try:
        so = inject(base.model, config)
    except AdapterError as err:
        raise CheckpointError(
            f"checkpoint {folder}: does not fit base model {base_ref.get('name')!r}: {err}"
        ) from None
    if so.fingerprint != manifest["fingerprint"]:
        raise CheckpointError(
            f"checkpoint {folder}: projection fingerprint {manifest['fingerprint']} does not match "
            f"this base model and federation ({so.fingerprint})"
        )
    files = read_verified(folder, manifest, TENSOR_FILES)  # parsed from the checked bytes
    blocks, masks, codes = (_tensors(folder, name, files[name]) for name in TENSOR_FILES)
    shapes = so.block_shapes()
    try:
        for task in config.tasks:
            if task in manifest["mask_ids"]:
                so.set_masks(task, {n: masks[_key(task, n)].to(torch.bool) for n in so.layers})
                if so.mask_id(task) != manifest["mask_ids"][task]:
                    raise CheckpointError(
                        f"checkpoint {folder}: mask of task {task!r} does not hash to its mask_id"
                    )
            with torch.no_grad():
                for n, layer in so.layers.items():
                    block = blocks[_key(task, n)]
                    if tuple(block.shape) != shapes[n]:
                        raise CheckpointError(
                            f"checkpoint {folder}: block {task}/{n} has shape "
                            f"{tuple(block.shape)}, expected {shapes[n]}"
                        )
                    layer.lora_B[task].copy_(block)
            if task in manifest.get("codes", []):
                so.codes[task] = {n: codes[_key(task, n)] for n in so.code_layers}
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {folder}: missing tensor {exc}") from None
    except AdapterError as err:
        raise CheckpointError(f"checkpoint {folder}: {err}") from None
    return LoadedCheckpoint(so=so, base=base, manifest=manifest)
