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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from solora_node.adapter import (
    BlockDelta,
    BlockVersion,
    MaskRecord,
    RawTensor,
    SoLoraConfig,
    calibrate,
    extract_block,
    inject,
    mask_record,
    set_block_tensors,
)
from solora_node.adapter import masks as mask_ops
from solora_node.adapter.tensors import encode_values
from solora_node.config import FederationSection, ModelSection
from solora_node.model import load_base_model

LORI_DENSITY = 0.1
LORI_ENCODING = "float16"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="default, tiny or a local HF folder")
    parser.add_argument("--cache-dir", type=Path, default=ModelSection().cache_dir)


def _wire_bytes(delta: BlockDelta, record: MaskRecord | None = None) -> tuple[int, str]:
    """Size on the wire with the net codec's framing; raw tensor bytes if it is absent."""
    try:
        from solora_node.net.codec import encode_delta, encode_mask
    except ImportError:
        raw = delta.nbytes + (sum(t.nbytes for t in record.layers.values()) if record else 0)
        return raw, "raw tensor bytes"
    size = len(encode_delta(delta))
    if record is not None:
        size += len(encode_mask(record))
    return size, "solora_node.net.codec"


def payload_bytes(delta: BlockDelta, record: MaskRecord | None = None) -> int:
    """Bytes one message takes on the wire (a delta, plus a mask record when one rides along).

    Shared with `solora-node sim`, so the benchmark and the experiments count alike.
    """
    return _wire_bytes(delta, record)[0]


def lora_delta(
    version: BlockVersion, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> BlockDelta:
    """Standard LoRA's round payload: A and B of every adapted layer, dense float32."""
    layers: dict[str, RawTensor] = {}
    for name in a:
        layers[f"{name}.lora_A"] = encode_values(a[name], "float32")
        layers[f"{name}.lora_B"] = encode_values(b[name], "float32")
    return BlockDelta(version=version, mask_id="", encoding="float32", layers=layers)


def lori_delta(
    version: BlockVersion, b: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> BlockDelta:
    """LoRI's round payload: B values under the node's own mask (its bitmap rides separately)."""
    return BlockDelta(
        version=version,
        mask_id=mask_ops.mask_id(masks),
        encoding=LORI_ENCODING,
        layers={n: encode_values(b[n][m], LORI_ENCODING) for n, m in masks.items()},
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    fed = FederationSection()
    torch.manual_seed(0)
    loaded = load_base_model(args.model, args.cache_dir)
    so = inject(loaded.model, SoLoraConfig.from_federation(fed))
    task = fed.tasks[0]
    version = BlockVersion(task=task, round=1, origin="bench")
    # A trained block stand-in: the byte counts depend on the mask sizes, not the values.
    generator = torch.Generator().manual_seed(0)
    shapes = so.block_shapes()
    trained = {n: torch.randn(s, generator=generator) for n, s in shapes.items()}
    set_block_tensors(so, task, trained)
    reset = fed.model_copy(update={"reset_after_calibration": False})
    calibrate(so, task, reset)
    solora = extract_block(so, task, version, fed.wire_dtype, include_codes=False)
    solora_bytes, framing = _wire_bytes(solora)
    values = sum(t.numel for t in solora.layers.values())
    so.codes[task] = {n: torch.ones(so.shapes[n][1]) for n in so.code_layers}
    with_codes, _ = _wire_bytes(extract_block(so, task, version, fed.wire_dtype))

    lora_a = {n: torch.randn(fed.rank, layer.in_features) for n, layer in so.layers.items()}
    lora = lora_delta(version, lora_a, trained)
    lora_layers = lora.layers
    lora_bytes, _ = _wire_bytes(lora)

    lori_masks = {n: mask_ops.magnitude_mask(b, LORI_DENSITY) for n, b in trained.items()}
    lori = lori_delta(version, trained, lori_masks)
    so.set_masks(task, lori_masks)
    lori_bytes, _ = _wire_bytes(lori, mask_record(so, task))

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
        "framing": framing,
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
