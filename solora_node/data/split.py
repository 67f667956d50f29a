"""Deterministic shuffling, train/eval splitting and sharding of example lists.

Every node of a task must derive the same splits from the same seed without talking to
the others, so all randomness here comes from a local `random.Random(seed)`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from solora_node.data.examples import Example

T = TypeVar("T")


def seeded_shuffle(items: Sequence[T], seed: int, salt: str) -> list[T]:
    """A copy of `items` in an order fixed by (seed, salt); salt keeps tasks independent."""
    shuffled = list(items)
    random.Random(f"{salt}:{seed}").shuffle(shuffled)
    return shuffled


def stratified_split(
    by_label: dict[str, list[str]], eval_fraction: float, seed: int, salt: str
) -> tuple[list[Example], list[Example]]:
    """Split each class separately so train and eval keep the class balance.

    Inputs must be unique across classes (callers drop ambiguous ones), so a disjoint
    split of each class is a disjoint split of the task.
    """
    train: list[Example] = []
    evaluation: list[Example] = []
    for label in sorted(by_label):
        inputs = seeded_shuffle(sorted(by_label[label]), seed, f"{salt}:{label}")
        n_eval = max(1, round(len(inputs) * eval_fraction))
        evaluation += [Example(text, label) for text in inputs[:n_eval]]
        train += [Example(text, label) for text in inputs[n_eval:]]
    # Interleave classes, so that any prefix (eval_examples, max_train_examples) is mixed.
    return seeded_shuffle(train, seed, f"{salt}:train"), seeded_shuffle(
        evaluation, seed, f"{salt}:eval"
    )


def shard(items: Sequence[T], shard_index: int, shard_count: int) -> list[T]:
    """Every `shard_count`-th item from `shard_index`: disjoint shards that cover `items`."""
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} must be in [0, {shard_count})")
    return list(items[shard_index::shard_count])
