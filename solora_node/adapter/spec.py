"""The adapter's settings: what every node of a federation must agree on, and how masks are made.

Plain dataclasses; solora_node/method_settings.py builds them from the daemon's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from solora_node.adapter.errors import UnknownTaskError


@dataclass(frozen=True)
class SoLoraConfig:
    """Shared by all nodes (it comes from the federation manifest), so A is never sent."""

    seed: int
    tasks: tuple[str, ...]
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    # Layers whose input means are the per-task routing codes; empty = the default choice.
    code_layers: tuple[str, ...] = field(default=())

    @property
    def total_rank(self) -> int:
        return self.rank * len(self.tasks)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def task_index(self, task: str) -> int:
        try:
            return self.tasks.index(task)
        except ValueError:
            raise UnknownTaskError(
                f"task {task!r} is not in the federation's tasks {list(self.tasks)}"
            ) from None

    def task_slice(self, task: str) -> slice:
        """Rows of A (columns of Q) owned by `task`: [t*r, (t+1)*r)."""
        start = self.task_index(task) * self.rank
        return slice(start, start + self.rank)


@dataclass(frozen=True)
class MaskSettings:
    """How a node makes its task's sparsity mask (docs/method.md, "Sparse B")."""

    density: float  # global density budget of B (rho)
    density_min: float  # lowest per-layer density
    sparsity_allocation: Literal["uniform", "magnitude", "spectral"]
    mask_mode: Literal["calibrated", "random"]
    reset_after_calibration: bool  # zero B after calibrating (LoRI style)
