"""Statistics of the adapted layers' inputs over local data, and what is built from them:
the layer-wise sparse mask (DESIGN §2.2) and the per-task routing codes mu_t (§2.5)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from solora_node.adapter import masks as mask_ops
from solora_node.adapter.model import SoLoraModel
from solora_node.config import FederationSection

log = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]  # input_ids and attention_mask (b x s); other keys ignored


@dataclass
class InputStats:
    """Per layer: sum of per-sample mean inputs, sum ||x||^2 and sum of (A x)^2 per slot."""

    samples: int = 0
    tokens: int = 0
    sample_means: dict[str, torch.Tensor] = field(default_factory=dict)
    sq_input: dict[str, float] = field(default_factory=dict)
    sq_slots: dict[str, torch.Tensor] = field(default_factory=dict)


class _Recorder:
    """Forward pre-hooks on SoLoraLinear layers that accumulate InputStats for one batch
    at a time; pad tokens are excluded through the batch's attention mask."""

    def __init__(self, so: SoLoraModel, layers: Sequence[str], project: bool) -> None:
        self.so = so
        self.layers = list(layers)
        self.project = project
        self.stats = InputStats()
        self.token_weights: torch.Tensor | None = None  # (b, s, 1), set per batch
        self.pooled: dict[str, torch.Tensor] = {}  # last batch: per-sample mean (b, d_in)

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        layer = self.so.layers[name]

        def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().to(torch.float32)
            w = self.token_weights
            if w is None or w.shape[:2] != x.shape[:2]:
                w = torch.ones(*x.shape[:2], 1, dtype=torch.float32, device=x.device)
            counts = w.sum(dim=1).clamp_min(1.0)  # (b, 1)
            pooled = (x * w).sum(dim=1) / counts  # (b, d_in)
            self.pooled[name] = pooled
            stats = self.stats
            stats.sample_means[name] = stats.sample_means.get(name, 0) + pooled.sum(dim=0)
            stats.sq_input[name] = stats.sq_input.get(name, 0.0) + float(
                ((x * x).sum(-1, keepdim=True) * w).sum()
            )
            if self.project:
                z = F.linear(x, layer.lora_A.to(torch.float32))
                stats.sq_slots[name] = stats.sq_slots.get(name, 0) + ((z * z) * w).sum(dim=(0, 1))

        return record

    def run(self, batches: Iterable[Batch]) -> InputStats:
        handles = [self.so.layers[n].register_forward_pre_hook(self._hook(n)) for n in self.layers]
        try:
            with torch.no_grad():
                for batch in batches:
                    self.forward(batch)
        finally:
            for handle in handles:
                handle.remove()
        return self.stats

    def forward(self, batch: Batch) -> None:
        input_ids = batch["input_ids"]
        attention = batch.get("attention_mask")
        if attention is None:
            attention = torch.ones_like(input_ids)
        self.token_weights = attention.to(torch.float32).unsqueeze(-1)
        self.so.model(input_ids=input_ids, attention_mask=attention)
        self.stats.samples += int(input_ids.shape[0])
        self.stats.tokens += int(attention.sum())


def collect_input_stats(
    so: SoLoraModel,
    batches: Iterable[Batch],
    layers: Sequence[str] | None = None,
    project: bool = True,
) -> InputStats:
    """Run the model (in its current gate) over `batches` and accumulate input statistics."""
    return _Recorder(so, layers if layers is not None else list(so.layers), project).run(batches)


def pooled_states(so: SoLoraModel, batch: Batch) -> torch.Tensor:
    """xhat per sample (b x sum d_in): the base model's mean input at each code layer,
    normalised per layer, concatenated, and normalised again."""
    recorder = _Recorder(so, so.code_layers, project=False)
    handles = [so.layers[n].register_forward_pre_hook(recorder._hook(n)) for n in so.code_layers]
    try:
        with torch.no_grad(), so.base_only():
            recorder.forward(batch)
    finally:
        for handle in handles:
            handle.remove()
    parts = [F.normalize(recorder.pooled[n], dim=-1) for n in so.code_layers]
    return F.normalize(torch.cat(parts, dim=-1), dim=-1)


def compute_codes(so: SoLoraModel, batches: Iterable[Batch]) -> dict[str, torch.Tensor]:
    """mu_t per code layer: the normalised mean (over samples) of the per-sample mean input,
    measured on the base model so that codes depend only on the data, not on training."""
    with so.base_only():
        stats = collect_input_stats(so, batches, so.code_layers, project=False)
    if stats.samples == 0:
        raise ValueError("compute_codes needs at least one batch")
    return {n: F.normalize(stats.sample_means[n] / stats.samples, dim=0) for n in so.code_layers}


def stack_codes(
    so: SoLoraModel,
    codes: Mapping[str, Mapping[str, torch.Tensor]],
    tasks: Sequence[str] | None = None,
) -> torch.Tensor:
    """H^T (T x sum d_in) in task order (all tasks, or `tasks`), each row built like
    pooled_states' xhat."""
    rows = []
    for task in so.tasks if tasks is None else tasks:
        parts = [F.normalize(codes[task][n].to(torch.float32), dim=0) for n in so.code_layers]
        rows.append(F.normalize(torch.cat(parts), dim=0))
    return torch.stack(rows)


def layer_scores(
    so: SoLoraModel, task: str, allocation: str, batches: Iterable[Batch] | None = None
) -> dict[str, float]:
    """The per-layer score the density budget is spread by ({} means uniform)."""
    if allocation == "uniform":
        return {}
    if allocation == "magnitude":
        # Density proportional to mean |B| = kept entries proportional to the magnitude mass.
        return {
            n: float(layer.lora_B[task].detach().abs().mean()) for n, layer in so.layers.items()
        }
    if allocation == "spectral":
        if batches is None:
            raise ValueError("spectral allocation needs local data batches")
        stats = collect_input_stats(so, batches, project=True)
        window = so.config.task_slice(task)
        return {
            n: mask_ops.spectral_score(float(stats.sq_slots[n][window].sum()), stats.sq_input[n])
            for n in so.layers
        }
    raise ValueError(f"sparsity_allocation {allocation!r} is not uniform, magnitude or spectral")


def seeded_random_masks(so: SoLoraModel, task: str, density: float) -> dict[str, torch.Tensor]:
    """The same masks on every node of `task`, from the federation seed (uniform density)."""
    shapes = so.block_shapes()
    return {n: mask_ops.random_mask(so.config.seed, task, n, shapes[n], density) for n in so.layers}


def calibrated_masks(
    so: SoLoraModel,
    task: str,
    density: float,
    density_min: float,
    allocation: str,
    batches: Iterable[Batch] | None = None,
) -> dict[str, torch.Tensor]:
    """Layer-wise densities from the budget, then the largest-|B| entries in each layer."""
    scores = layer_scores(so, task, allocation, batches)
    numels = {n: d_out * r for n, (d_out, r) in so.block_shapes().items()}
    densities = mask_ops.allocate_densities(scores, numels, density, density_min)
    result: dict[str, torch.Tensor] = {}
    for name, layer in so.layers.items():
        block = layer.lora_B[task].detach()
        if bool((block == 0).all()):
            # Nothing learnt here (no warm-up): magnitudes carry no signal, fall back to the
            # seeded pattern so that nodes of the task still agree.
            log.warning(
                "layer %s: B of %s is zero at calibration; using the seeded mask", name, task
            )
            result[name] = mask_ops.random_mask(
                so.config.seed, task, name, tuple(block.shape), densities[name]
            )
        else:
            result[name] = mask_ops.magnitude_mask(block, densities[name])
    return result


def calibrate(
    so: SoLoraModel, task: str, fed: FederationSection, batches: Iterable[Batch] | None = None
) -> str:
    """Make and install task's mask as the federation says; reset B if configured.

    Returns the mask_id. With mask_mode 'random' no data or warm-up is needed.
    """
    if fed.mask_mode == "random":
        masks = seeded_random_masks(so, task, fed.density)
    else:
        masks = calibrated_masks(
            so, task, fed.density, fed.density_min, fed.sparsity_allocation, batches
        )
    so.set_masks(task, masks)
    if fed.mask_mode == "calibrated" and fed.reset_after_calibration:
        reset_block(so, task)
    return so.mask_id(task)


@torch.no_grad()
def reset_block(so: SoLoraModel, task: str) -> None:
    so.check_task(task)
    for layer in so.layers.values():
        layer.lora_B[task].zero_()
