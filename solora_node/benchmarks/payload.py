"""`bench payload`: bytes one node sends per round — LoRA vs LoRI vs SO-LoRA — measured by
encoding a real round's payload with the project's own code (adapter + net codec).

Assumptions (per method, same target modules and rank r as the default manifest):
  lora    A and B of the one shared adapter, dense, float32.
  lori    B only, 90% magnitude-sparse, float16 values plus a packed bitmap of the mask
          every round: LoRI calibrates its mask per node and has no agreement step, so a
          receiver cannot know the positions otherwise.
  solora  own task's B values under the cluster's agreed mask, in the manifest's wire
          dtype; no indices (the mask travels once, by mask_id), no A (seeded).
Routing codes (mu_t) only change with the local data, so they need to ride with a node's
first block only; `bytes_with_codes` is the size of a delta that carries them anyway.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from solora_node.adapter import (
    BlockVersion,
    calibrate,
    extract_block,
    inject,
    mask_record,
    set_block_tensors,
)
from solora_node.adapter import masks as mask_ops
from solora_node.adapter.baselines import LORI_DENSITY, LORI_ENCODING, lora_delta, lori_delta
from solora_node.config import FederationSection, ModelSection
from solora_node.method_settings import mask_settings, solora_config
from solora_node.model import load_base_model
from solora_node.net.codec import encoded_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default, tiny or a local HF folder")
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)


def run(args: argparse.Namespace) -> dict[str, Any]:
    fed = FederationSection()
    torch.manual_seed(0)
    loaded = load_base_model(args.model, args.cache_dir)
    so = inject(loaded.model, solora_config(fed))
    task = fed.tasks[0]
    version = BlockVersion(task=task, round=1, origin="bench")
    # A trained block stand-in: the byte counts depend on the mask sizes, not the values.
    generator = torch.Generator().manual_seed(0)
    shapes = so.block_shapes()
    trained = {n: torch.randn(s, generator=generator) for n, s in shapes.items()}
    set_block_tensors(so, task, trained)
    reset = fed.model_copy(update={"reset_after_calibration": False})
    calibrate(so, task, mask_settings(reset))
    solora = extract_block(so, task, version, fed.wire_dtype, include_codes=False)
    solora_bytes = encoded_size(solora)
    values = sum(t.numel for t in solora.layers.values())
    so.codes[task] = {n: torch.ones(so.shapes[n][1]) for n in so.code_layers}
    with_codes = encoded_size(extract_block(so, task, version, fed.wire_dtype))

    lora_a = {n: torch.randn(fed.rank, layer.in_features) for n, layer in so.layers.items()}
    lora = lora_delta(version, lora_a, trained)
    lora_layers = lora.layers
    lora_bytes = encoded_size(lora)

    lori_masks = {n: mask_ops.magnitude_mask(b, LORI_DENSITY) for n, b in trained.items()}
    lori = lori_delta(version, trained, lori_masks)
    so.set_masks(task, lori_masks)
    lori_bytes = encoded_size(lori, mask_record(so, task))

    return {
        "model": args.model,
        "manifest": {
            "tasks": fed.tasks,
            "rank": fed.rank,
            "target_modules": fed.target_modules,
            "density": fed.density,
            "wire_dtype": fed.wire_dtype,
            "adapted_layers": len(so.layers),
        },
        "framing": "solora_node.net.codec",
        "methods": {
            "lora": {
                "bytes_per_round": lora_bytes,
                "values": sum(t.numel for t in lora_layers.values()),
                "encoding": "float32",
            },
            "lori": {
                "bytes_per_round": lori_bytes,
                "values": sum(t.numel for t in lori.layers.values()),
                "encoding": LORI_ENCODING,
                "mask_bits_per_round": True,
            },
            "solora": {
                "bytes_per_round": solora_bytes,
                "values": values,
                "encoding": fed.wire_dtype,
                "bytes_with_codes": with_codes,
            },
        },
        "reduction_vs_lora": 1.0 - solora_bytes / lora_bytes,
        "reduction_vs_lori": 1.0 - solora_bytes / lori_bytes,
        "reduction_vs_lora_with_codes": 1.0 - with_codes / lora_bytes,
    }
