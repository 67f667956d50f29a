"""Static orthogonal projections: Q_l (d_in x T*r) from the federation seed and the layer name.

Every node regenerates the same Q_l, so A never travels; the fingerprint lets peers check
that they really do agree before they exchange blocks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from solora_node.adapter.errors import ProjectionError

PROJECTION_SCHEME = "solora/projection/v1"
FINGERPRINT_CHARS = 32
# Probe values are rounded so that last-bit differences between BLAS builds do not split a
# federation; a real disagreement (other seed, tasks or shapes) changes far more than that.
PROBE_DECIMALS = 6

LayerShapes = dict[str, tuple[int, int]]  # layer name -> (d_out, d_in)


def layer_seed(seed: int, layer: str) -> int:
    """A 63-bit generator seed from the federation seed and the layer name (stable hash)."""
    digest = hashlib.sha256(f"{PROJECTION_SCHEME}|{seed}|{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def orthogonal_projection(seed: int, layer: str, d_in: int, total_rank: int) -> torch.Tensor:
    """Q (d_in x total_rank, float32) with orthonormal columns, identical on every node.

    The Gaussian draw and the QR run in float64 (the float64 normal sampler has a single code
    path, unlike float32's vectorised one), and the signs are fixed so that diag(R) > 0: QR is
    then unique, whichever LAPACK computed it.
    """
    if total_rank > d_in:
        raise ProjectionError(
            f"layer {layer}: tasks*rank = {total_rank} rank slots exceed its input size "
            f"d_in = {d_in}; lower federation.rank or the number of tasks"
        )
    generator = torch.Generator(device="cpu").manual_seed(layer_seed(seed, layer))
    gaussian = torch.randn(d_in, total_rank, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian, mode="reduced")
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return (q * signs).to(torch.float32).contiguous()


def _matches(name: str, targets: Sequence[str]) -> bool:
    # PEFT's rule for a list of target_modules: the module name equals or ends with ".target".
    return any(name == t or name.endswith("." + t) for t in targets)


def target_layers(model: nn.Module, target_modules: Sequence[str]) -> LayerShapes:
    """The nn.Linear layers an adapter goes on, in module order, with (d_out, d_in)."""
    shapes: LayerShapes = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and _matches(name, target_modules):
            shapes[name] = (module.out_features, module.in_features)
    if not shapes:
        raise ProjectionError(
            f"federation.target_modules {list(target_modules)} match no linear layer of the "
            "model; expected names like 'q_proj' or 'v_proj'"
        )
    return shapes


def check_total_rank(
    shapes: Mapping[str, tuple[int, int]], tasks: Sequence[str], rank: int
) -> None:
    """Raise a ProjectionError naming the first layer where T*r > d_in."""
    total = rank * len(tasks)
    for name, (_, d_in) in shapes.items():
        if total > d_in:
            raise ProjectionError(
                f"layer {name}: {len(tasks)} tasks x rank {rank} = {total} rank slots exceed "
                f"its input size d_in = {d_in}; lower federation.rank or the number of tasks"
            )


def validate_federation(
    model: nn.Module, tasks: Sequence[str], rank: int, target_modules: Sequence[str]
) -> LayerShapes:
    """Config-time check that the federation fits the model; returns the adapted layers."""
    shapes = target_layers(model, target_modules)
    check_total_rank(shapes, tasks, rank)
    return shapes


def _probe_text(value: float) -> str:
    # "+ 0.0" turns a rounded -0.0 into 0.0, so tiny values of either sign print alike.
    return f"{round(value, PROBE_DECIMALS) + 0.0:.{PROBE_DECIMALS}f}"


def projection_fingerprint(
    seed: int,
    tasks: Sequence[str],
    rank: int,
    shapes: Mapping[str, tuple[int, int]],
    projections: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """Hex digest over seed, tasks, rank, layer shapes and probe values of every Q_l.

    `projections` (layer -> Q, d_in x R) saves regenerating Q when the caller has it.
    """
    total = rank * len(tasks)
    header = {
        "scheme": PROJECTION_SCHEME,
        "seed": seed,
        "tasks": list(tasks),
        "rank": rank,
        "layers": [[name, *shapes[name]] for name in sorted(shapes)],
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(shapes):
        d_in = shapes[name][1]
        q = projections[name] if projections is not None else None
        if q is None:
            q = orthogonal_projection(seed, name, d_in, total)
        probes = (q[0, 0], q[d_in - 1, total - 1], q[d_in // 2, total // 2])
        digest.update((name + ":" + ",".join(_probe_text(float(v)) for v in probes)).encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]
