"""Injection of SO-LoRA into a causal LM, and the handle the node, trainer and sim use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from solora_node.adapter import masks as mask_ops
from solora_node.adapter.errors import AdapterError, MaskError, ProjectionError, UnknownTaskError
from solora_node.adapter.gate import ExpertGate
from solora_node.adapter.layer import SoLoraLinear
from solora_node.adapter.projection import (
    check_total_rank,
    orthogonal_projection,
    projection_fingerprint,
    target_layers,
)
from solora_node.adapter.spec import SoLoraConfig

# Routing codes default to the inputs of the first target module at these depth fractions.
DEFAULT_CODE_DEPTHS = (0.25, 0.5, 0.75)


class SoLoraModel:
    """A base model with every task's expert injected in place of the target nn.Linears.

    `model` stays an ordinary transformers model (forward, generate, the trainer's loop);
    this object holds the gate, the layers by name, the routing codes and the fingerprint.
    """

    def __init__(self, model: nn.Module, config: SoLoraConfig) -> None:
        if any(isinstance(m, SoLoraLinear) for m in model.modules()):
            raise AdapterError("model already has SO-LoRA layers; inject into a fresh base model")
        shapes = target_layers(model, config.target_modules)
        check_total_rank(shapes, config.tasks, config.rank)
        for param in model.parameters():
            param.requires_grad_(False)
        self.model = model
        self.config = config
        self.gate = ExpertGate(config.tasks, config.rank)
        self.layers: dict[str, SoLoraLinear] = {}
        projections: dict[str, torch.Tensor] = {}
        for name, (_, d_in) in shapes.items():
            q = orthogonal_projection(config.seed, name, d_in, config.total_rank)
            projections[name] = q
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            base = getattr(parent, attr)
            layer = SoLoraLinear(
                base, q.T.contiguous(), config.tasks, config.rank, config.scale, self.gate
            )
            setattr(parent, attr, layer)
            self.layers[name] = layer
        self.shapes = shapes
        self.fingerprint = projection_fingerprint(
            config.seed, config.tasks, config.rank, shapes, projections
        )
        self.code_layers = self._resolve_code_layers(config.code_layers)
        # task -> layer -> normalised mean input mu_t (d_in,); computed locally or received.
        self.codes: dict[str, dict[str, torch.Tensor]] = {}

    # -- structure ---------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    def check_task(self, task: str) -> None:
        if task not in self.config.tasks:
            raise UnknownTaskError(
                f"task {task!r} is not in the federation's tasks {list(self.config.tasks)}"
            )

    def block_shapes(self) -> dict[str, tuple[int, int]]:
        """Shape of B per layer: (d_out, r)."""
        return {name: (d_out, self.config.rank) for name, (d_out, _) in self.shapes.items()}

    def _resolve_code_layers(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        if requested:
            unknown = [n for n in requested if n not in self.layers]
            if unknown:
                raise ProjectionError(f"code layers {unknown} are not adapted layers")
            return requested
        first = self.config.target_modules[0]
        candidates = [n for n in self.layers if n == first or n.endswith("." + first)]
        candidates = candidates or list(self.layers)
        picked = {
            candidates[min(len(candidates) - 1, int(f * len(candidates)))]
            for f in DEFAULT_CODE_DEPTHS
        }
        return tuple(n for n in candidates if n in picked)

    # -- gate --------------------------------------------------------------------------
    def use_task(self, task: str) -> None:
        self.gate.task(task)

    def use_merge(self) -> None:
        self.gate.merge()

    def use_base(self) -> None:
        self.gate.off()

    def use_weights(self, weights: torch.Tensor) -> None:
        self.gate.set_weights(weights)

    @contextmanager
    def base_only(self) -> Iterator[None]:
        """Run the frozen base model (gate off), restoring the gate afterwards."""
        saved = (self.gate.mode, self.gate.index, self.gate.weights)
        self.gate.off()
        try:
            yield
        finally:
            mode, index, weights = saved
            if mode == "task":
                self.gate.task(self.tasks[index])
            elif mode == "merge":
                self.gate.merge()
            elif mode == "weights" and weights is not None:
                self.gate.set_weights(weights)

    # -- training ----------------------------------------------------------------------
    def train_task(self, task: str) -> list[nn.Parameter]:
        """Gate one-hot on `task`, only its B trainable; returns the parameters to optimise."""
        self.check_task(task)
        self.gate.task(task)
        for layer in self.layers.values():
            layer.set_trainable(task)
        return self.trainable_parameters(task)

    def freeze(self) -> None:
        for layer in self.layers.values():
            layer.set_trainable(None)

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        self.check_task(task)
        return [layer.lora_B[task] for layer in self.layers.values()]

    def grad_masks(self, task: str) -> dict[nn.Parameter, torch.Tensor]:
        """Param -> float mask for a trainer that multiplies gradients (empty while dense)."""
        self.check_task(task)
        result: dict[nn.Parameter, torch.Tensor] = {}
        for layer in self.layers.values():
            mask = layer.mask(task)
            if mask is not None:
                param = layer.lora_B[task]
                result[param] = mask.to(param.dtype)
        return result

    def enforce_masks(self, task: str | None = None) -> None:
        """B *= mask (after an optimiser step, as a safety net behind the gradient masks)."""
        for t in [task] if task is not None else list(self.tasks):
            for layer in self.layers.values():
                layer.enforce_mask(t)

    @staticmethod
    @torch.no_grad()
    def mask_optimizer_state(
        optimizer: torch.optim.Optimizer, grad_masks: dict[nn.Parameter, torch.Tensor]
    ) -> None:
        """Zero the optimiser's moment estimates off the mask (e.g. after warm-up, when the
        optimiser is kept): Adam's momentum would otherwise move masked entries."""
        for param, mask in grad_masks.items():
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                    value.mul_(mask)

    # -- masks -------------------------------------------------------------------------
    def masks(self, task: str) -> dict[str, torch.Tensor]:
        """Task's mask per layer; an all-ones mask where the block is still dense."""
        self.check_task(task)
        result: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            mask = layer.mask(task)
            result[name] = (
                mask
                if mask is not None
                else torch.ones(layer.out_features, self.config.rank, dtype=torch.bool)
            )
        return result

    def has_mask(self, task: str) -> bool:
        self.check_task(task)
        return all(layer.mask(task) is not None for layer in self.layers.values())

    def mask_id(self, task: str) -> str:
        return mask_ops.mask_id(self.masks(task))

    def set_masks(self, task: str, masks: dict[str, torch.Tensor] | None) -> None:
        """Install one mask per adapted layer (checked first), or None to go dense."""
        self.check_task(task)
        if masks is not None:
            expected = self.block_shapes()
            if set(masks) != set(expected):
                missing = sorted(set(expected) - set(masks))[:3]
                extra = sorted(set(masks) - set(expected))[:3]
                raise MaskError(
                    f"mask for task {task!r} does not cover the adapted layers "
                    f"(missing {missing}, unexpected {extra})"
                )
            for name, mask in masks.items():
                if tuple(mask.shape) != expected[name]:
                    raise MaskError(
                        f"mask of layer {name} has shape {tuple(mask.shape)}, "
                        f"expected {expected[name]}"
                    )
        for name, layer in self.layers.items():
            layer.set_mask(task, None if masks is None else masks[name])

    # -- analysis ----------------------------------------------------------------------
    def delta_weights(self, task: str) -> dict[str, torch.Tensor]:
        """dW_t per layer (d_out x d_in)."""
        self.check_task(task)
        with torch.no_grad():
            return {name: layer.delta_weight(task) for name, layer in self.layers.items()}

    def unload(self) -> nn.Module:
        """Put the original nn.Linear layers back and return the plain base model."""
        for name, layer in self.layers.items():
            layer.set_trainable(None)
            parent_name, _, attr = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, attr, layer.base_layer)
        self.layers = {}
        return self.model


def inject(model: nn.Module, config: SoLoraConfig) -> SoLoraModel:
    """Replace the target linears of `model` (in place) by SoLoraLinear; all B start at zero."""
    return SoLoraModel(model, config)
