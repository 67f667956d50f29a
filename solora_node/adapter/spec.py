"""The adapter's configuration: what every node of a federation must agree on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from solora_node.adapter.errors import UnknownTaskError
from solora_node.config import FederationSection


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

    @classmethod
    def from_federation(
        cls, fed: FederationSection, code_layers: Sequence[str] = ()
    ) -> SoLoraConfig:
        return cls(
            seed=fed.seed,
            tasks=tuple(fed.tasks),
            rank=fed.rank,
            alpha=fed.alpha,
            target_modules=tuple(fed.target_modules),
            code_layers=tuple(code_layers),
        )

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
