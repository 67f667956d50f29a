"""The one place the daemon's config becomes the method's settings.

adapter/, train/ and data/ take small dataclasses, not the pydantic sections of
config.py; the daemon (learner) and the simulator both convert here, so a field
added to a section reaches the method the same way in both.
"""

from __future__ import annotations

from collections.abc import Sequence

from solora_node.adapter.spec import MaskSettings, SoLoraConfig
from solora_node.config import FederationSection, TaskSection, TrainSection
from solora_node.data.settings import TaskSettings
from solora_node.defaults import auto_lr
from solora_node.train.settings import TrainSettings


def solora_config(fed: FederationSection, code_layers: Sequence[str] = ()) -> SoLoraConfig:
    """What every node of the federation shares: seed, task order, rank, targets."""
    return SoLoraConfig(
        seed=fed.seed,
        tasks=tuple(fed.tasks),
        rank=fed.rank,
        alpha=fed.alpha,
        target_modules=tuple(fed.target_modules),
        code_layers=tuple(code_layers),
    )


def mask_settings(fed: FederationSection) -> MaskSettings:
    return MaskSettings(
        density=fed.density,
        density_min=fed.density_min,
        sparsity_allocation=fed.sparsity_allocation,
        mask_mode=fed.mask_mode,
        reset_after_calibration=fed.reset_after_calibration,
    )


def train_settings(train: TrainSection, density: float = 1.0) -> TrainSettings:
    """The trainer's settings; an unset lr follows the adapter's density (auto_lr)."""
    return TrainSettings(
        batch_size=train.batch_size,
        max_seq_len=train.max_seq_len,
        lr=train.lr if train.lr is not None else auto_lr(density),
        weight_decay=train.weight_decay,
        grad_clip=train.grad_clip,
        seed=train.seed,
        threads=train.threads,
    )


def task_settings(task: TaskSection) -> TaskSettings:
    return TaskSettings(
        name=task.name,
        source=task.source,
        train_file=task.train_file,
        eval_file=task.eval_file,
        shard_index=task.shard_index,
        shard_count=task.shard_count,
        max_train_examples=task.max_train_examples,
        eval_examples=task.eval_examples,
    )
