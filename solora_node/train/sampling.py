"""Seeded batch order: a fresh permutation per epoch, resumable from two integers."""

from __future__ import annotations

import torch


class EpochSampler:
    """Batches of indices in [0, size); state is (epoch, position), nothing else.

    Each epoch's permutation is a pure function of (seed, epoch), so a restored sampler
    continues exactly where the saved one stopped.
    """

    def __init__(self, size: int, seed: int, epoch: int = 0, position: int = 0) -> None:
        if size < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.size = size
        self.seed = seed
        self.epoch = epoch
        self.position = position
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def next_batch(self, batch_size: int) -> list[int]:
        batch: list[int] = []
        while len(batch) < batch_size:
            if self.position >= self.size:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(batch_size - len(batch), self.size - self.position)
            batch += self._order[self.position : self.position + take]
            self.position += take
        return batch

    def restore(self, epoch: int, position: int) -> None:
        self.epoch, self.position = epoch, position
        self._order = self._permutation(epoch)
