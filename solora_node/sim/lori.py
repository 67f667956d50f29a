"""LoRI-DFL: one adapter shared by all tasks, frozen random (not orthogonal) A, 90%
magnitude-sparse B with a mask of each node's own (no agreement), gossip of B with every
neighbour. The receiver needs the sender's positions: the sender's mask record goes with
its first block to each receiver, whose ledger keeps it by its content id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

from solora_node.adapter import (
    block_tensors,
    inject,
    mask_record,
    reset_block,
    set_block_tensors,
)
from solora_node.adapter import masks as mask_ops
from solora_node.adapter.baselines import LORI_DENSITY, lori_delta
from solora_node.adapter.delta import dense_block
from solora_node.data.examples import TaskData
from solora_node.federation.aggregate import Block
from solora_node.method_settings import solora_config
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.sim.solora import edge_collisions, federation
from solora_node.sim.strategy import RunContext, Strategy
from solora_node.train import LocalTrainer
from solora_node.train.evaluate import MergedEval as DeviceEval
from solora_node.train.evaluate import hits_all

SHARED = "shared"


def random_projection(seed: int, layer: str, rank: int, d_in: int) -> torch.Tensor:
    """Gaussian A with rows of expected unit norm (the scale of SO-LoRA's orthonormal rows)."""
    digest = hashlib.sha256(f"lori|{seed}|{layer}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randn(rank, d_in, generator=generator) / d_in**0.5


class LoriStrategy(Strategy):
    name = "lori"
    same_task_gossip = False

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.fed = federation(ctx, (SHARED,))
        self.so = inject(ctx.loaded.model, solora_config(self.fed))
        for name, layer in self.so.layers.items():
            layer.lora_A = random_projection(self.fed.seed, name, self.fed.rank, layer.in_features)
        self.states: list[dict[str, torch.Tensor]] = []
        self.masks: list[dict[str, torch.Tensor] | None] = []
        self.trainers: list[LocalTrainer] = []
        self.records: list[MaskRecord | None] = []

    def setup(self) -> None:
        so = self.so
        params = so.train_task(SHARED)
        reset_block(so, SHARED)
        for device in self.devices:
            self.states.append(block_tensors(so, SHARED))
            self.masks.append(None)
            self.records.append(None)
            self.trainers.append(self.device_trainer(so.model, device, params))
        for device in self.devices:
            i = device.index
            self._load(i)
            self.trainers[i].train_steps(self.config.warmup_steps)
            # Own magnitude mask per layer from the dense warm-up, then B restarts from zero.
            masks = {
                n: mask_ops.magnitude_mask(layer.lora_B[SHARED].detach(), LORI_DENSITY)
                for n, layer in so.layers.items()
            }
            self.masks[i] = masks
            so.set_masks(SHARED, masks)
            self.records[i] = mask_record(so, SHARED)
            reset_block(so, SHARED)
            self._save(i)
            self.trainers[i].reset_optimizer(so.train_task(SHARED), so.grad_masks(SHARED))

    def _load(self, i: int) -> None:
        self.so.set_masks(SHARED, self.masks[i])
        self.so.train_task(SHARED)
        set_block_tensors(self.so, SHARED, self.states[i])

    def _save(self, i: int) -> None:
        self.states[i] = block_tensors(self.so, SHARED)

    def train_device(self, i: int) -> list[float]:
        self._load(i)
        losses = self.trainers[i].train_steps(self.config.local_steps)
        self.so.enforce_masks(SHARED)
        self._save(i)
        return losses

    def publish(self, i: int, round_: int, *, with_codes: bool) -> BlockDelta:
        masks = self.masks[i]
        assert masks is not None
        return lori_delta(self.version(i, round_), self.states[i], masks)

    def mask(self, i: int) -> MaskRecord | None:
        return self.records[i]

    def own_block(self, i: int) -> Block:
        return self.states[i]

    def set_own_block(self, i: int, block: Block) -> None:
        masks = self.masks[i]
        assert masks is not None
        # Averaging spreads neighbours' entries off this node's mask; LoRI keeps its own.
        self.states[i] = {n: t.float() * masks[n] for n, t in block.items()}

    def dense(self, delta: BlockDelta, i: int) -> Block:
        masks = self.masks[self.index(delta.version.origin)]  # the sender's own mask
        assert masks is not None
        return dense_block(delta, masks)

    def evaluate_device(
        self, i: int, foreign: Mapping[str, BlockDelta], evals: Mapping[str, TaskData]
    ) -> DeviceEval:
        self._load(i)
        self.so.freeze()
        self.so.use_task(SHARED)
        return DeviceEval(hits=hits_all(self.so.model, self.tok, evals, self.config.max_seq_len))

    def collision(self) -> dict[str, float]:
        def masks_of(i: int) -> dict[str, torch.Tensor]:
            masks = self.masks[i]
            assert masks is not None
            return masks

        return edge_collisions(self, masks_of)
