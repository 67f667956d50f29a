"""Poisoned peers for the robust-aggregation experiment (docs/topology.md).

A poisoner trains honestly but every same-task block it sends is replaced, as its
receivers see it, by a scaled (sign-flipped, blown-up) or random copy. Only the
averaged copy is poisoned: the bytes on the wire are the honest payload's size, which
is what a real attacker's payload would also weigh.
"""

from __future__ import annotations

import torch

from solora_node.federation.aggregate import Block

POISONS = ("scaled", "random")


def poison_block(block: Block, kind: str, scale: float, seed: int) -> dict[str, torch.Tensor]:
    """`scaled`: -scale x the honest block. `random`: Gaussian noise `scale` times the
    honest block's RMS, on the honest block's support (a sparse block stays sparse)."""
    if kind == "scaled":
        return {name: -scale * value for name, value in block.items()}
    if kind != "random":
        raise ValueError(f"unknown poison {kind!r}; expected one of {', '.join(POISONS)}")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in block.items():
        support = value != 0
        rms = float(value[support].pow(2).mean().sqrt()) if bool(support.any()) else 0.0
        noise = torch.randn(value.shape, generator=gen, dtype=value.dtype)
        out[name] = noise * (scale * max(rms, 1e-6)) * support
    return out
