"""Which task data a node loads: a plain dataclass (solora_node/method_settings.py builds it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class TaskSettings:
    """A node's task: its name, where its examples come from, its shard, and size limits."""

    name: str
    source: Literal["builtin", "jsonl"]
    train_file: Path | None
    eval_file: Path | None
    shard_index: int
    shard_count: int
    max_train_examples: int | None
    eval_examples: int
