"""Aggregation of one task's B blocks (docs/topology.md): gossip mean and robust rules.

A block is `dict[str, Tensor]`: per adapted layer, the B values of one task
(dense, or the 1-D values under the shared mask; every copy must have the same
keys and shapes). Every function here takes ONE task's blocks: different tasks
are orthogonal experts, never competing estimates, so they are never averaged
together. Foreign tasks' blocks are not averaged at all: the ledger keeps the freshest
version of each (federation.versions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Block = Mapping[str, Tensor]
Rule = Literal["mean", "median", "trimmed_mean"]
RULES: tuple[Rule, ...] = ("mean", "median", "trimmed_mean")

# Weights from one plan sum to exactly 1 up to float error; more than this
# over 1 means the caller mixed rows of different plans or double-counted a peer.
_WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AggregationRule:
    """How a node combines its own block with its neighbours' (config `topology.*`)."""

    rule: Rule = "mean"
    trim_fraction: float = 0.2
    clip_norm: float | None = None


class TaskMismatchError(ValueError):
    """Blocks of different tasks were handed to one aggregation."""


def check_task(task: str, tasks: Iterable[str]) -> None:
    """Raise TaskMismatchError unless every block's task is `task`."""
    other = sorted({t for t in tasks if t != task})
    if other:
        raise TaskMismatchError(f"refusing to aggregate task {task!r} with blocks of {other}")


# ---------------------------------------------------------------------------
# Shape checks and the arithmetic


def _check_shapes(own: Block, others: Sequence[Block]) -> None:
    for n, block in enumerate(others):
        if set(block) != set(own):
            missing = sorted(set(own) ^ set(block))
            raise ValueError(f"neighbour block {n} has different layers than own: {missing}")
        for name, value in block.items():
            if value.shape != own[name].shape:
                raise ValueError(
                    f"neighbour block {n} layer {name!r} has shape {tuple(value.shape)}, "
                    f"own has {tuple(own[name].shape)}"
                )


def _self_weight(weights: Sequence[float], self_weight: float | None) -> float:
    """Weight left for own block once the present neighbours took theirs.

    Weights of absent neighbours (dead, stale, refused) go back to self, which
    keeps the update a convex combination: the block is neither shrunk toward
    zero nor inflated. If the absent peer also drops this node (the usual case:
    a link failure is seen from both ends), the effective matrix is the plan's
    Metropolis matrix with that edge's weight moved to both diagonals, which is
    still symmetric doubly stochastic, so the cluster average is preserved.
    """
    if any(w < 0 for w in weights):
        raise ValueError(f"mixing weights must be >= 0, got {list(weights)}")
    remaining = 1.0 - float(sum(weights))
    if self_weight is not None and self_weight < 0:
        raise ValueError(f"self weight must be >= 0, got {self_weight}")
    if remaining < -_WEIGHT_TOLERANCE or (
        self_weight is not None and self_weight > remaining + _WEIGHT_TOLERANCE
    ):
        raise ValueError(
            f"mixing weights exceed 1: self {self_weight} + neighbours {float(sum(weights))}"
        )
    return max(remaining, 0.0)


def clip_to(own: Block, other: Block, clip_norm: float) -> dict[str, Tensor]:
    """`own + (other - own) * min(1, clip_norm / ||other - own||)`, the norm over all layers.

    Bounds how far one neighbour can pull this node in a round, whatever it sent.
    """
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    diffs = {name: other[name].float() - own[name].float() for name in own}
    norm = torch.sqrt(sum((d.pow(2).sum() for d in diffs.values()), torch.tensor(0.0))).item()
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {name: (own[name].float() + d * scale).to(own[name].dtype) for name, d in diffs.items()}


def gossip_average(
    own: Block,
    neighbours: Sequence[tuple[float, Block]],
    self_weight: float | None = None,
) -> dict[str, Tensor]:
    """Metropolis step `B_i <- W_ii B_i + sum_j W_ij B_j` over the neighbours present.

    `neighbours` holds (W_ij, block) of the copies that arrived and are fresh;
    `self_weight` is the plan's W_ii, given only to check consistency: the
    weight own actually gets is 1 - sum of present W_ij (see `_self_weight`).
    Computed in float32, returned in own's dtype.
    """
    weights = [w for w, _ in neighbours]
    blocks = [b for _, b in neighbours]
    _check_shapes(own, blocks)
    w_self = _self_weight(weights, self_weight)
    result = {}
    for name, value in own.items():
        acc = value.float() * w_self
        for w, block in zip(weights, blocks, strict=True):
            acc = acc + block[name].float() * w
        result[name] = acc.to(value.dtype)
    return result


def _stack(own: Block, others: Sequence[Block], name: str) -> Tensor:
    return torch.stack([own[name].float(), *(b[name].float() for b in others)])


def coordinate_median(own: Block, others: Sequence[Block]) -> dict[str, Tensor]:
    """Entry-wise median of own and the neighbours' copies (unweighted).

    With an even count the mean of the two middle values is used (not torch's
    lower median), so the result does not depend on copy order.
    """
    _check_shapes(own, others)
    result = {}
    for name, value in own.items():
        ordered = torch.sort(_stack(own, others, name), dim=0).values
        count = ordered.shape[0]
        mid = (ordered[(count - 1) // 2] + ordered[count // 2]) / 2
        result[name] = mid.to(value.dtype)
    return result


def trimmed_mean(own: Block, others: Sequence[Block], trim_fraction: float) -> dict[str, Tensor]:
    """Entry-wise mean after dropping the floor(trim_fraction * n) lowest and highest copies.

    n counts own too. With few copies floor(.) can be 0, and this is the plain
    (unweighted) mean: trimming needs at least 1/trim_fraction copies.
    """
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    _check_shapes(own, others)
    count = 1 + len(others)
    cut = int(trim_fraction * count)
    result = {}
    for name, value in own.items():
        ordered = torch.sort(_stack(own, others, name), dim=0).values
        result[name] = ordered[cut : count - cut].mean(dim=0).to(value.dtype)
    return result


def aggregate_blocks(
    own: Block,
    neighbour_blocks: Sequence[Block],
    weights: Sequence[float],
    rule: Rule = "mean",
    trim_fraction: float = 0.2,
    clip_norm: float | None = None,
    *,
    task: str | None = None,
    neighbour_tasks: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """One aggregation of own task's block with the fresh neighbour copies, per config.

    1. Optional norm clipping of each neighbour's difference to own (`clip_norm`).
    2. `rule`: "mean" is the Metropolis-weighted gossip step (weights = W_ij of
       the present neighbours, the rest goes to self); "median" and
       "trimmed_mean" are unweighted and robust to a minority of bad copies, but
       do not preserve the cluster average exactly.
    Pass `task` and `neighbour_tasks` to have a mix-up of tasks refused.
    """
    if len(weights) != len(neighbour_blocks):
        raise ValueError(f"{len(weights)} weights for {len(neighbour_blocks)} neighbour blocks")
    if neighbour_tasks is not None:
        if task is None:
            raise ValueError("neighbour_tasks given without the task being aggregated")
        if len(neighbour_tasks) != len(neighbour_blocks):
            raise ValueError(f"{len(neighbour_tasks)} tasks for {len(neighbour_blocks)} blocks")
        check_task(task, neighbour_tasks)
    _check_shapes(own, neighbour_blocks)
    others = list(neighbour_blocks)
    if clip_norm is not None:
        others = [clip_to(own, block, clip_norm) for block in others]
    if not others:
        return {name: value.clone() for name, value in own.items()}
    if rule == "mean":
        return gossip_average(own, list(zip(weights, others, strict=True)))
    if rule == "median":
        return coordinate_median(own, others)
    if rule == "trimmed_mean":
        return trimmed_mean(own, others, trim_fraction)
    raise ValueError(f"unknown aggregation rule {rule!r}; expected one of {', '.join(RULES)}")
