"""Sparsity masks of B: layer-wise density allocation, magnitude and seeded random masks,
content hashes (mask_id), bit packing and the collision rate. Pure functions on tensors."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from solora_node.adapter.errors import MaskError

MASK_SCHEME = "solora/mask/v1"
MASK_ID_CHARS = 32
_BISECTION_STEPS = 100

Masks = dict[str, torch.Tensor]  # layer name -> bool tensor (d_out, r)


def keep_count(numel: int, density: float) -> int:
    """Entries kept at `density`; at least one, so no layer is silently switched off."""
    return min(numel, max(1, round(density * numel)))


def allocate_densities(
    scores: Mapping[str, float],
    numels: Mapping[str, int],
    budget: float,
    density_min: float,
) -> dict[str, float]:
    """Per-layer densities proportional to `scores`, clipped to [density_min, 1], that spend
    the global budget exactly: sum_l rho_l n_l = budget * sum_l n_l.

    The clip makes "proportional" a water-filling problem; the scale c of rho_l = c * s_l is
    found by bisection (the kept total is monotone in c). Without positive scores, or when
    the floor alone exceeds the budget, every layer gets the budget (resp. the floor).
    """
    names = list(numels)
    total = float(sum(numels[n] for n in names))
    positive = [max(float(scores.get(n, 0.0)), 0.0) for n in names]
    if budget >= 1.0:
        return {n: 1.0 for n in names}
    if not any(s > 0 for s in positive) or not np.all(np.isfinite(positive)):
        return {n: max(budget, density_min) for n in names}
    if density_min >= budget:
        return {n: density_min for n in names}
    sizes = np.array([numels[n] for n in names], dtype=np.float64)
    s = np.array(positive, dtype=np.float64)

    def kept(c: float) -> float:
        return float(np.sum(np.clip(c * s, density_min, 1.0) * sizes))

    low, high = 0.0, 1.0 / float(np.min(s[s > 0]))  # at `high` every scored layer is dense
    target = budget * total
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (low + high)
        if kept(mid) < target:
            low = mid
        else:
            high = mid
    rho = np.clip(high * s, density_min, 1.0)
    return {n: float(r) for n, r in zip(names, rho, strict=True)}


def magnitude_mask(block: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the largest-|value| entries of a block (ties: lowest flat index first)."""
    flat = block.detach().abs().flatten().to(torch.float64)
    order = torch.argsort(flat, descending=True, stable=True)
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[: keep_count(flat.numel(), density)]] = True
    return mask.view(block.shape)


def mask_seed(seed: int, task: str, layer: str) -> int:
    digest = hashlib.sha256(f"{MASK_SCHEME}|{seed}|{task}|{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_mask(
    seed: int, task: str, layer: str, shape: tuple[int, int], density: float
) -> torch.Tensor:
    """A mask every node of `task` derives alike from the federation seed: no calibration."""
    numel = shape[0] * shape[1]
    generator = torch.Generator(device="cpu").manual_seed(mask_seed(seed, task, layer))
    chosen = torch.randperm(numel, generator=generator)[: keep_count(numel, density)]
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[chosen] = True
    return mask.view(shape)


def pack_mask(mask: torch.Tensor) -> bytes:
    """Bits in row-major order, numpy.packbits order 'big' (the MaskRecord wire format)."""
    bits = mask.detach().to(torch.bool).flatten().cpu().numpy()
    return np.packbits(bits, bitorder="big").tobytes()


def unpack_mask(data: bytes, shape: tuple[int, int]) -> torch.Tensor:
    numel = shape[0] * shape[1]
    if len(data) != (numel + 7) // 8:
        raise MaskError(
            f"packed mask has {len(data)} bytes; shape {shape} needs {(numel + 7) // 8}"
        )
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel, bitorder="big")
    return torch.from_numpy(bits.astype(np.bool_)).view(shape)


def mask_id(masks: Mapping[str, torch.Tensor]) -> str:
    """Content hash over layer names, shapes and packed bits (hex)."""
    digest = hashlib.sha256(MASK_SCHEME.encode())
    for name in sorted(masks):
        mask = masks[name]
        digest.update(f"|{name}|{tuple(mask.shape)}|".encode())
        digest.update(pack_mask(mask))
    return digest.hexdigest()[:MASK_ID_CHARS]


def collision_rate(mine: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> float:
    """|M_i ∩ M_j| / |M_i| over the layers both masks cover (0.0 if M_i is empty there)."""
    shared = [n for n in mine if n in theirs]
    kept = sum(int(mine[n].sum()) for n in shared)
    if kept == 0:
        return 0.0
    both = sum(int((mine[n] & theirs[n].to(mine[n].device)).sum()) for n in shared)
    return both / kept


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of entries kept over all layers."""
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / total if total else 0.0


def spectral_score(sq_projected: float, sq_input: float) -> float:
    """tr(A_t C A_t^T) / tr(C) from the sums of ||A_t x||^2 and ||x||^2 over local tokens.

    C (the input's second moment) never needs forming: tr(A C A^T) = E||A x||^2 and
    tr(C) = E||x||^2, so calibration costs one small matmul per layer and batch.
    """
    return sq_projected / sq_input if sq_input > 0 else 0.0
