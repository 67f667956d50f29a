"""One node's local learning: base model + SO-LoRA adapter + task data + trainer.

This is the "train" step of a round, and the model side of the round step
(federation.round.Participant): no network, no files. The daemon calls it from a
worker thread; every method runs to completion without awaiting.
"""

from __future__ import annotations

import logging
import threading

import torch

from solora_node.adapter import (
    AdapterError,
    SoLoraModel,
    apply_block,
    apply_codes,
    block_tensors,
    calibrate,
    compute_codes,
    dense_block,
    extract_block,
    inject,
    install_mask,
    mask_record,
    set_block_tensors,
)
from solora_node.adapter.prompts import prompt_batches
from solora_node.config import NodeConfig
from solora_node.data.examples import TaskData
from solora_node.data.tasks import load_task, truncated
from solora_node.federation.aggregate import Block
from solora_node.method_settings import mask_settings, solora_config, task_settings, train_settings
from solora_node.model import LoadedModel, load_base_model
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord
from solora_node.protocol.reasons import Reason
from solora_node.train import LocalTrainer, evaluate

log = logging.getLogger(__name__)

CODE_PROMPTS = 128  # prompts used for this task's routing code (mean input)


class LocalLearner:
    """The model, adapter, data and optimizer of one node's own task."""

    def __init__(self, cfg: NodeConfig, loaded: LoadedModel | None = None) -> None:
        self.cfg = cfg
        self.task = cfg.task.name
        torch.manual_seed(cfg.train.seed)
        if loaded is None:
            loaded = load_base_model(cfg.model.base, cfg.model.cache_dir, seed=cfg.train.seed)
        self.tokenizer = loaded.tokenizer
        self.so: SoLoraModel = inject(loaded.model, solora_config(cfg.federation))
        # The federation seed, not the node's: all nodes of a task must cut the same
        # train/eval split and disjoint shards of it.
        self.data: TaskData = load_task(task_settings(cfg.task), seed=cfg.federation.seed)
        cut = truncated(self.tokenizer, self.data.train, cfg.train.max_seq_len)
        if cut:
            log.warning(
                "task %s: %d of %d train examples exceed train.max_seq_len %d tokens; "
                "their oldest prompt tokens are dropped (raise max_seq_len to keep them)",
                self.task,
                cut,
                len(self.data.train),
                cfg.train.max_seq_len,
            )
        params = self.so.train_task(self.task)
        self.trainer = LocalTrainer(
            loaded.model,
            loaded.tokenizer,
            self.data.train,
            params,
            train_settings(cfg.train, cfg.federation.density),
        )
        self.so.codes[self.task] = self._routing_code()
        # Held while the model's parameters change, so a checkpoint taken from another
        # thread (e.g. on SIGTERM) never sees half a step.
        self.lock = threading.Lock()

    def _routing_code(self) -> dict[str, torch.Tensor]:
        prompts = [ex.input for ex in self.data.train[:CODE_PROMPTS]]
        return compute_codes(self.so, prompt_batches(self.tokenizer, prompts))

    @property
    def calibrated(self) -> bool:
        return self.so.has_mask(self.task)

    @property
    def mask_id(self) -> str:
        return self.so.mask_id(self.task)

    def mask(self) -> MaskRecord:
        """The mask this node trains under, as the record peers receive."""
        return mask_record(self.so, self.task)

    def warm_up(self) -> list[float]:
        """Dense local steps before the mask exists (docs/method.md, step 1)."""
        steps = self.cfg.federation.warmup_steps
        if self.cfg.federation.mask_mode == "random" or steps == 0:
            return []
        with self.lock:
            self.so.train_task(self.task)
            return self.trainer.train_steps(steps)

    def calibrate(self) -> str:
        """Make this node's own mask from its warm-up and local data; returns the mask_id."""
        batches = prompt_batches(self.tokenizer, [ex.input for ex in self.data.train[:64]])
        mask_id = calibrate(self.so, self.task, mask_settings(self.cfg.federation), batches)
        self.restart_optimizer()
        return mask_id

    def adopt_mask(self, record: MaskRecord) -> None:
        """Train under the cluster's mask from now on (entries off it are dropped)."""
        install_mask(self.so, record)
        self.so.enforce_masks(self.task)
        self.restart_optimizer()

    def restart_optimizer(self) -> None:
        # Adam's moments belong to the old support: start fresh under the new mask.
        params = self.so.train_task(self.task)
        self.trainer.reset_optimizer(params, self.so.grad_masks(self.task))

    def train_round(self) -> list[float]:
        with self.lock:
            self.so.train_task(self.task)
            losses = self.trainer.train_steps(self.cfg.train.steps_per_round)
            self.so.enforce_masks(self.task)
        return losses

    def evaluate_own(self, limit: int | None = None) -> float:
        """Accuracy on this node's task with the task-aware (one-hot) gate."""
        self.so.use_task(self.task)
        try:
            # The training length rule, so a node scores what it trained on alike.
            return evaluate(
                self.so.model,
                self.tokenizer,
                self.data,
                limit=limit,
                max_len=self.cfg.train.max_seq_len,
            )
        finally:
            self.so.train_task(self.task)

    # ------------------------------------------------------------------ blocks

    def block(self, version: BlockVersion, encoding: str, *, with_codes: bool) -> BlockDelta:
        """A task's block as the wire payload (own task, or a foreign expert held)."""
        return extract_block(self.so, version.task, version, encoding, include_codes=with_codes)

    def install_foreign(self, delta: BlockDelta, record: MaskRecord | None) -> Reason:
        """federation.ledger.Installer: put another task's freshest block into the model."""
        try:
            so = self.so
            if not so.has_mask(delta.task) or so.mask_id(delta.task) != delta.mask_id:
                if record is None:
                    return Reason.MASK_UNKNOWN
                install_mask(so, record)
            apply_block(so, delta, expected_mask_id=delta.mask_id)
        except AdapterError as err:
            log.warning("refused block of %s from %s: %s", delta.task, delta.version.origin, err)
            return Reason.REFUSED_BY_STORE
        return Reason.OK

    def install_codes(self, card: BlockDelta) -> Reason:
        """federation.ledger.CodesInstaller: another task's routing codes, for the gate."""
        try:
            apply_codes(self.so, card)
        except AdapterError as err:
            log.warning(
                "refused routing codes of %s from %s: %s", card.task, card.version.origin, err
            )
            return Reason.REFUSED_BY_STORE
        return Reason.OK

    # ------------------------------------------------------------------ Participant

    def own_block(self) -> Block:
        return block_tensors(self.so, self.task)

    def set_own_block(self, block: Block) -> None:
        set_block_tensors(self.so, self.task, block)

    def dense(self, delta: BlockDelta) -> Block:
        return dense_block(delta, self.so.masks(self.task))
