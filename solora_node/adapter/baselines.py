"""What the baselines send per round, in this project's block format: LoRA and LoRI payloads.

Used to compare bytes on the wire with SO-LoRA (`bench payload`, `sim`, the demo's
summary); docs/results.md states the assumptions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from solora_node.adapter import masks as mask_ops
from solora_node.adapter.tensors import encode_values
from solora_node.protocol.blocks import BlockDelta, BlockVersion, RawTensor

LORI_DENSITY = 0.1
LORI_ENCODING = "float16"


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
