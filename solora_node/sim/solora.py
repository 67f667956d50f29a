"""Ours: orthogonal A slices, sparse B under the cluster's agreed mask, gossip inside the
task cluster, freshest foreign experts relayed, implicit MoE (auto gate) at evaluation."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from solora_node.adapter import (
    apply_block,
    block_tensors,
    calibrate,
    compute_codes,
    dense_block,
    extract_block,
    inject,
    install_mask,
    mask_record,
    record_masks,
    reset_block,
    set_block_tensors,
)
from solora_node.adapter import masks as mask_ops
from solora_node.adapter.prompts import prompt_batches
from solora_node.config import FederationSection
from solora_node.data.examples import TaskData
from solora_node.defaults import FEDERATION_SEED
from solora_node.federation.aggregate import Block
from solora_node.method_settings import mask_settings, solora_config
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.sim.strategy import RunContext, Strategy
from solora_node.train import LocalTrainer
from solora_node.train.evaluate import MergedEval as DeviceEval
from solora_node.train.evaluate import evaluate_merged as evaluate_solora


def federation(ctx: RunContext, tasks: tuple[str, ...]) -> FederationSection:
    c = ctx.config
    return FederationSection(
        seed=FEDERATION_SEED + c.seed,
        tasks=list(tasks),
        rank=c.rank,
        alpha=c.alpha,
        target_modules=list(c.target_modules),
        density=c.density,
        density_min=min(0.01, c.density),
        warmup_steps=c.warmup_steps,
        wire_dtype=c.wire_dtype,  # type: ignore[arg-type]
    )


class SoLoraStrategy(Strategy):
    name = "solora"
    mask_agreement = True

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.fed = federation(ctx, ctx.config.tasks)
        self.so = inject(ctx.loaded.model, solora_config(self.fed))
        self.states: list[dict[str, torch.Tensor]] = []
        self.trainers: list[LocalTrainer] = []
        self.codes: list[dict[str, torch.Tensor]] = []
        self.records: list[MaskRecord | None] = []  # the mask each device trains under
        self.pooled: dict[str, torch.Tensor] = {}  # eval prompt -> xhat (base model)
        self._unpacked: dict[str, dict[str, torch.Tensor]] = {}  # mask_id -> bool masks

    def setup(self) -> None:
        so = self.so
        for device in self.devices:
            texts = [ex.input for ex in device.data.train[: self.config.code_prompts]]
            self.codes.append(compute_codes(so, prompt_batches(self.tok, texts)))
            params = so.train_task(device.task)
            reset_block(so, device.task)
            self.trainers.append(self.device_trainer(so.model, device, params))
            self.states.append(block_tensors(so, device.task))
            self.records.append(None)
        for device in self.devices:  # dense warm-up, before any mask exists
            self._load(device.index)
            self.trainers[device.index].train_steps(self.config.warmup_steps)
            self._save(device.index)

    def calibrate(self, i: int) -> MaskRecord:
        device = self.devices[i]
        self._load(i)
        texts = [ex.input for ex in device.data.train[:64]]
        calibrate(self.so, device.task, mask_settings(self.fed), prompt_batches(self.tok, texts))
        self._save(i)
        self.records[i] = mask_record(self.so, device.task)
        self._restart_optimizer(i)
        return self.records[i]  # type: ignore[return-value]

    def adopt_mask(self, i: int, record: MaskRecord) -> None:
        self.records[i] = record
        self._load(i)  # installs the mask; set_block_tensors drops entries off it
        self._save(i)
        self._restart_optimizer(i)

    def _restart_optimizer(self, i: int) -> None:
        task = self.devices[i].task
        params = self.so.train_task(task)
        self.trainers[i].reset_optimizer(params, self.so.grad_masks(task))

    def mask(self, i: int) -> MaskRecord | None:
        return self.records[i]

    def _load(self, i: int) -> None:
        task, record = self.devices[i].task, self.records[i]
        if record is not None and (
            not self.so.has_mask(task) or self.so.mask_id(task) != record.mask_id
        ):
            install_mask(self.so, record)
        self.so.train_task(task)
        set_block_tensors(self.so, task, self.states[i])

    def _save(self, i: int) -> None:
        self.states[i] = block_tensors(self.so, self.devices[i].task)

    def train_device(self, i: int) -> list[float]:
        self._load(i)
        losses = self.trainers[i].train_steps(self.config.local_steps)
        self.so.enforce_masks(self.devices[i].task)
        self._save(i)
        return losses

    def publish(self, i: int, round_: int, *, with_codes: bool) -> BlockDelta:
        device = self.devices[i]
        self._load(i)
        self.so.codes[device.task] = self.codes[i]
        return extract_block(
            self.so,
            device.task,
            self.version(i, round_),
            self.fed.wire_dtype,
            include_codes=with_codes,
        )

    def own_block(self, i: int) -> Block:
        return self.states[i]

    def set_own_block(self, i: int, block: Block) -> None:
        self.states[i] = {n: t.clone() for n, t in block.items()}

    def _device_masks(self, i: int) -> dict[str, torch.Tensor]:
        record = self.records[i]
        assert record is not None, "a device has a mask once the agreement is done"
        if record.mask_id not in self._unpacked:
            self._unpacked[record.mask_id] = record_masks(record)
        return self._unpacked[record.mask_id]

    def dense(self, delta: BlockDelta, i: int) -> Block:
        return dense_block(delta, self._device_masks(i))

    def load_merged(
        self, i: int, foreign: Mapping[str, BlockDelta]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Own block + the foreign experts held into the model; returns the codes held."""
        device, so = self.devices[i], self.so
        self._load(i)
        so.freeze()
        codes = {device.task: self.codes[i]}
        for task in self.config.tasks:
            if task == device.task:
                continue
            held = foreign.get(task)
            if held is None:
                reset_block(so, task)
                continue
            origin = self.index(held.version.origin)
            record = self.records[origin]
            if record is not None and (not so.has_mask(task) or so.mask_id(task) != held.mask_id):
                install_mask(so, record)
            apply_block(so, held, expected_mask_id=held.mask_id)
            codes[task] = self.codes[origin]
        return codes

    def evaluate_device(
        self, i: int, foreign: Mapping[str, BlockDelta], evals: Mapping[str, TaskData]
    ) -> DeviceEval:
        codes = self.load_merged(i, foreign)
        return evaluate_solora(
            self.so, self.tok, evals, codes, self.pooled, self.config.max_seq_len
        )

    def full_masks(self, i: int) -> dict[str, torch.Tensor]:
        """Device's mask in the whole B space (d_out x T*r): its task's slot, zeros elsewhere."""
        own = self.devices[i].task
        mine = self._device_masks(i)
        parts: dict[str, list[torch.Tensor]] = {}
        for task in self.config.tasks:
            for name, mask in self.so.masks(task).items():
                parts.setdefault(name, []).append(
                    mine[name] if task == own else torch.zeros_like(mask)
                )
        return {n: torch.cat(p, dim=1) for n, p in parts.items()}

    def collision(self) -> dict[str, float]:
        return edge_collisions(self, self.full_masks)


def edge_collisions(
    strategy: Strategy, masks_of: Callable[[int], dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Mean |M_i ∩ M_j| / |M_i| over graph edges, split by same-task and cross-task pairs."""
    same: list[float] = []
    cross: list[float] = []
    masks = [masks_of(i) for i in range(len(strategy.devices))]
    devices = strategy.devices
    for i, j in strategy.ctx.topology.graph.edges:
        for a, b in ((i, j), (j, i)):
            rate = mask_ops.collision_rate(masks[a], masks[b])
            (same if devices[a].task == devices[b].task else cross).append(rate)
    return {
        "same_task": float(sum(same) / len(same)) if same else float("nan"),
        "cross_task": float(sum(cross) / len(cross)) if cross else float("nan"),
    }
