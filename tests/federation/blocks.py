"""Small blocks, masks and descriptors for the federation tests (no model needed)."""

from __future__ import annotations

import torch

from solora_node.adapter.tensors import encode_values
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord
from solora_node.protocol.messages import Descriptor

TASKS = ("a", "b", "c")


def mask(task: str, mask_id: str) -> MaskRecord:
    """A mask record that only names itself: the ledger never looks inside one."""
    return MaskRecord(task=task, mask_id=mask_id, layers={}, shapes={})


def delta(task: str, round_: int, origin: str, mask_id: str = "m", *values: float) -> BlockDelta:
    """A one-layer block whose values are `values` (default: [round])."""
    tensor = torch.tensor(values or (float(round_),), dtype=torch.float32)
    return BlockDelta(
        BlockVersion(task, round_, origin),
        mask_id,
        "float32",
        {"l0": encode_values(tensor, "float32")},
    )


def descriptor(item_id: int, item: BlockDelta | MaskRecord) -> Descriptor:
    if isinstance(item, MaskRecord):
        return Descriptor(item_id, "mask", item.task, 0, "", item.mask_id, "", 1, bytes(32))
    v = item.version
    return Descriptor(
        item_id, "delta", v.task, v.round, v.origin, item.mask_id, "float32", 1, bytes(32)
    )
