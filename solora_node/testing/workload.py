"""Synthetic masks and blocks with the wire's shapes: the workload of `bench` and of tests.

Seeded, so a parent process and a loopback peer rebuild the very same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from solora_node.net.codec import from_float32
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord, RawTensor

Layout = Mapping[str, tuple[int, int]]  # layer -> dense (d_out, r) of B


def default_round_layout(layers: int = 30, rank: int = 8) -> dict[str, tuple[int, int]]:
    """B shapes of the default model (SmolLM2-135M): q_proj 576->576, v_proj 576->192."""
    layout: dict[str, tuple[int, int]] = {}
    for i in range(layers):
        layout[f"model.layers.{i}.self_attn.q_proj"] = (576, rank)
        layout[f"model.layers.{i}.self_attn.v_proj"] = (192, rank)
    return layout


def random_mask(task: str, layout: Layout, density: float, seed: int) -> MaskRecord:
    """A seeded mask keeping round(density * d_out * r) entries per layer."""
    rng = np.random.default_rng(seed)
    layers: dict[str, RawTensor] = {}
    digest = hashlib.sha256(task.encode())
    for name, (rows, cols) in layout.items():
        size = rows * cols
        keep = max(1, round(density * size))
        bits = np.zeros(size, dtype=np.uint8)
        bits[rng.choice(size, size=keep, replace=False)] = 1
        packed = np.packbits(bits, bitorder="big")
        layers[name] = RawTensor(dtype="uint8", shape=(packed.size,), data=packed.tobytes())
        digest.update(name.encode())
        digest.update(packed.tobytes())
    return MaskRecord(
        task=task, mask_id=digest.hexdigest()[:16], layers=layers, shapes=dict(layout)
    )


def synthetic_delta(
    mask: MaskRecord,
    *,
    round_: int,
    origin: str,
    encoding: str = "float16",
    seed: int = 0,
    scale: float = 0.01,
    codes: Mapping[str, tuple[int, ...]] | None = None,
) -> BlockDelta:
    """Random values under `mask` (1-d per layer, in mask order)."""
    rng = np.random.default_rng(seed)
    layers = {}
    for name, tensor in mask.layers.items():
        rows, cols = mask.shapes[name]
        count = int(np.unpackbits(np.frombuffer(tensor.data, np.uint8), count=rows * cols).sum())
        layers[name] = from_float32(rng.standard_normal(count, dtype=np.float32) * scale, encoding)
    code_tensors = {
        name: from_float32(rng.standard_normal(shape, dtype=np.float32), "float32")
        for name, shape in (codes or {}).items()
    }
    return BlockDelta(
        version=BlockVersion(task=mask.task, round=round_, origin=origin),
        mask_id=mask.mask_id,
        encoding=encoding,
        layers=layers,
        codes=code_tensors,
    )
