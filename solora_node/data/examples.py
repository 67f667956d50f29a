"""The shapes of task data: one example, one task's splits, and the error for bad data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from solora_node.errors import SoloraError

TaskKind = Literal["generate", "label"]


class DataError(SoloraError):
    """Bad task data; the message names the file (and line) and what is expected."""


@dataclass(frozen=True)
class Example:
    input: str
    output: str


@dataclass(frozen=True)
class TaskData:
    """One task's splits. `labels` lists the answer set of a label task (empty for generate).

    `validation` is held out of train for choosing settings (empty unless asked for), so
    `eval` can be scored once with the settings chosen.
    """

    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    train: list[Example]
    eval: list[Example]
    validation: list[Example] = field(default_factory=list)
