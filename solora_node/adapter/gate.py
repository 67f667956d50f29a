"""The expert gate g of the implicit mixture of experts, shared by every SoLoraLinear.

y = W0 x + (alpha/r) * sum_t g_t * B_t A_t x. Modes:
  off     g = 0 (the base model; routing codes are measured in this mode)
  task    g = onehot(t) (task-aware; training uses this, only expert t is computed)
  merge   g = 1 for all tasks (plain merging, for comparison)
  weights g given per task, shape (T,) or per sample (batch, T) (the `auto` router)
"""

from __future__ import annotations

from typing import Literal

import torch

from solora_node.adapter.errors import UnknownTaskError

GateMode = Literal["off", "task", "merge", "weights"]


class ExpertGate:
    """Mutable gate state; one object per SoLoraModel, read by all its layers."""

    def __init__(self, tasks: tuple[str, ...], rank: int) -> None:
        self.tasks = tasks
        self.rank = rank
        self.mode: GateMode = "off"
        self.index = -1
        self.weights: torch.Tensor | None = None
        self._slot_weights: torch.Tensor | None = None

    def off(self) -> None:
        self.mode, self.index, self.weights, self._slot_weights = "off", -1, None, None

    def task(self, task: str) -> None:
        if task not in self.tasks:
            raise UnknownTaskError(
                f"task {task!r} is not in the federation's tasks {list(self.tasks)}"
            )
        self.mode, self.index, self.weights, self._slot_weights = (
            "task",
            self.tasks.index(task),
            None,
            None,
        )

    def merge(self) -> None:
        self.mode, self.index, self.weights, self._slot_weights = "merge", -1, None, None

    def set_weights(self, weights: torch.Tensor) -> None:
        """Per-task weights (T,) or per-sample (batch, T)."""
        if weights.shape[-1] != len(self.tasks) or weights.dim() not in (1, 2):
            raise ValueError(
                f"gate weights must have shape (T,) or (batch, T) with T = {len(self.tasks)}"
            )
        weights = weights.detach().to(torch.float32)
        self.mode, self.index, self.weights = "weights", -1, weights
        # Each task's weight covers its r rank slots: (.., T) -> (.., T*r).
        self._slot_weights = weights.repeat_interleave(self.rank, dim=-1)

    def slot_weights(self, ndim: int) -> torch.Tensor:
        """Weights over the T*r slots, shaped to broadcast against an input of `ndim` dims."""
        if self._slot_weights is None:
            raise RuntimeError("gate has no weights set")
        w = self._slot_weights
        if w.dim() == 2 and ndim > 2:
            w = w.view(w.shape[0], *([1] * (ndim - 2)), w.shape[1])
        return w

    def describe(self) -> dict[str, object]:
        """A JSON-friendly view of the gate, for logs and `infer --json`."""
        if self.mode == "task":
            return {"mode": "task", "task": self.tasks[self.index]}
        if self.mode == "weights" and self.weights is not None:
            return {"mode": "weights", "weights": self.weights.tolist()}
        return {"mode": self.mode}
