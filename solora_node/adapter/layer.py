"""SoLoraLinear: a frozen nn.Linear plus every task's expert B_t A_t (the math of one layer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from solora_node.adapter.gate import ExpertGate


class SoLoraLinear(nn.Module):
    """y = W0 x + (alpha/r) * sum_t g_t * B_t (A_t x).

    A (all tasks' slices, R x d_in, rows = Q^T) is a non-persistent buffer: regenerated from
    the seed, never trained, never in a state dict. Each task has its own B Parameter, so an
    optimiser over task t's parameters cannot touch another task's block.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        projection: torch.Tensor,
        tasks: Sequence[str],
        rank: int,
        scale: float,
        gate: ExpertGate,
    ) -> None:
        super().__init__()
        total_rank, d_in = projection.shape
        if d_in != base_layer.in_features or total_rank != rank * len(tasks):
            raise ValueError(
                f"projection of shape {tuple(projection.shape)} does not fit the layer"
            )
        self.base_layer = base_layer
        self.tasks = tuple(tasks)
        self.rank = rank
        self.scale = scale
        self.gate = gate  # shared with every layer of the model; a plain attribute, not a module
        weight = base_layer.weight
        self.register_buffer(
            "lora_A", projection.to(device=weight.device, dtype=weight.dtype), persistent=False
        )
        self.lora_B = nn.ParameterDict(
            {
                t: nn.Parameter(
                    torch.zeros(
                        base_layer.out_features, rank, device=weight.device, dtype=weight.dtype
                    ),
                    requires_grad=False,
                )
                for t in self.tasks
            }
        )
        for t in self.tasks:
            self.register_buffer(self._mask_name(t), None, persistent=False)
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    lora_A: torch.Tensor

    @staticmethod
    def _mask_name(task: str) -> str:
        return f"lora_mask__{task}"

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def task_projection(self, task: str) -> torch.Tensor:
        """A_t (r x d_in), a contiguous row slice of A."""
        start = self.tasks.index(task) * self.rank
        return self.lora_A[start : start + self.rank]

    def mask(self, task: str) -> torch.Tensor | None:
        """Task's bool mask over B (d_out x r), or None while the block is dense."""
        value = getattr(self, self._mask_name(task))
        return value if isinstance(value, torch.Tensor) else None

    @torch.no_grad()
    def set_mask(self, task: str, mask: torch.Tensor | None) -> None:
        """Install a mask and zero B outside it, so "B is zero off the mask" always holds."""
        if mask is not None:
            mask = mask.to(device=self.lora_A.device, dtype=torch.bool)
            self.lora_B[task].mul_(mask)
        setattr(self, self._mask_name(task), mask)

    @torch.no_grad()
    def enforce_mask(self, task: str) -> None:
        mask = self.mask(task)
        if mask is not None:
            self.lora_B[task].mul_(mask)

    def set_trainable(self, task: str | None) -> None:
        """Only B of `task` requires grad; its gradient is masked at the source by a hook."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for t, param in self.lora_B.items():
            param.requires_grad_(t == task)
        if task is not None:
            # The hook reads the mask when the gradient arrives, so a mask installed later
            # (calibration, a re-sync from the cluster head) is honoured without re-registering.
            self._hooks.append(
                self.lora_B[task].register_hook(lambda g, t=task: self._masked_grad(t, g))
            )

    def _masked_grad(self, task: str, grad: torch.Tensor) -> torch.Tensor:
        mask = self.mask(task)
        return grad if mask is None else grad * mask

    def delta_weight(self, task: str) -> torch.Tensor:
        """dW_t = (alpha/r) B_t A_t (d_out x d_in): what expert t adds to W0."""
        return self.scale * (self.lora_B[task] @ self.task_projection(task))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        gate = self.gate
        if gate.mode == "off":
            return out
        lora_in = x if x.dtype == self.lora_A.dtype else x.to(self.lora_A.dtype)
        if gate.mode == "task":
            # One expert: the same two thin matmuls as a plain LoRA layer, the others skipped.
            task = self.tasks[gate.index]
            start = gate.index * self.rank
            hidden = F.linear(lora_in, self.lora_A[start : start + self.rank])
            update = F.linear(hidden, self.lora_B[task])
        else:
            hidden = F.linear(lora_in, self.lora_A)
            if gate.mode == "weights":
                hidden = hidden * gate.slot_weights(hidden.dim()).to(hidden.dtype)
            stacked = torch.cat([self.lora_B[t] for t in self.tasks], dim=1)  # d_out x R
            update = F.linear(hidden, stacked)
        # One fused op (add with alpha) where PEFT spends a multiply and an add.
        return torch.add(out, update.to(out.dtype), alpha=self.scale)

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, rank={self.rank}, scale={self.scale}"
