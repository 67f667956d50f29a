"""The local trainer's settings: a plain dataclass (solora_node/method_settings.py builds it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSettings:
    """AdamW on the adapter's trainable block, one seeded sampler per node."""

    batch_size: int
    max_seq_len: int
    lr: float
    weight_decay: float
    grad_clip: float
    seed: int
    threads: int  # torch.set_num_threads (process-wide)
