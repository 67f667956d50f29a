"""The daemon's checkpoint snapshot: which tensors and metadata a round leaves on disk
(docs/checkpoints.md), and how a restart reads them back into the learner and ledger.

Tensor keys: `B/<task>/<layer>` every task's block, `mask/<task>/<layer>` (uint8) the
masks held, `code/<task>/<layer>` routing codes, `opt/...` the optimizer state.
Metadata: the round, mask ids, the version (round, origin, incarnation) of each foreign
expert held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from solora_node.adapter import block_tensors, mask_record, set_block_tensors
from solora_node.adapter.checkpoint import save_checkpoint
from solora_node.config import NodeConfig
from solora_node.data_dir import ADAPTER_DIR
from solora_node.federation.ledger import Ledger
from solora_node.node.learner import LocalLearner
from solora_node.protocol.blocks import BlockVersion
from solora_node.store import CheckpointStore


def save_snapshot(
    store: CheckpointStore, learner: LocalLearner, ledger: Ledger, cfg: NodeConfig, round_: int
) -> None:
    """Checkpoint round `round_` and refresh the adapter folder `infer` reads."""
    with learner.lock:
        so = learner.so
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"round": round_, "masks": {}, "foreign": {}, "codes": []}
        for task in so.tasks:
            for layer, block in block_tensors(so, task).items():
                tensors[f"B/{task}/{layer}"] = block
            if so.has_mask(task):
                meta["masks"][task] = so.mask_id(task)
                for layer, mask in so.masks(task).items():
                    tensors[f"mask/{task}/{layer}"] = mask.to(torch.uint8)
            for layer, code in so.codes.get(task, {}).items():
                tensors[f"code/{task}/{layer}"] = code
        for task, delta in ledger.foreign_blocks().items():
            v = delta.version
            meta["foreign"][task] = {
                "round": v.round,
                "origin": v.origin,
                "incarnation": v.incarnation,
            }
        opt_tensors, opt_meta = learner.trainer.export_state()
        tensors.update({f"opt/{k}": v for k, v in opt_tensors.items()})
        meta["trainer"] = opt_meta
        store.save(round_, tensors, meta)
        save_checkpoint(
            so,
            Path(cfg.node.data_dir) / ADAPTER_DIR,
            cfg.model.base,
            federation_id=cfg.federation.id,
            base_seed=cfg.train.seed,
            round_=round_,
        )


def restore_snapshot(
    store: CheckpointStore, learner: LocalLearner, ledger: Ledger, cfg: NodeConfig
) -> tuple[int, Path] | None:
    """Load the latest checkpoint into the learner and ledger; its (round, path), or None."""
    ckpt = store.load_latest()
    if ckpt is None:
        return None
    so, tensors, meta = learner.so, ckpt.tensors, ckpt.meta
    for task in so.tasks:
        if task in meta.get("masks", {}):
            so.set_masks(
                task, {layer: tensors[f"mask/{task}/{layer}"].bool() for layer in so.layers}
            )
        set_block_tensors(so, task, {n: tensors[f"B/{task}/{n}"] for n in so.layers})
        codes = {n: tensors[f"code/{task}/{n}"] for n in so.layers if f"code/{task}/{n}" in tensors}
        if codes:
            so.codes[task] = codes
    opt = {k.removeprefix("opt/"): v for k, v in tensors.items() if k.startswith("opt/")}
    learner.restart_optimizer()
    learner.trainer.import_state(opt, meta.get("trainer", {}))
    encoding = cfg.federation.wire_dtype
    for task, v in meta.get("foreign", {}).items():
        version = BlockVersion(
            task=task,
            round=int(v["round"]),
            origin=str(v["origin"]),
            incarnation=int(v.get("incarnation", 0)),
        )
        ledger.restore_foreign(learner.block(version, encoding, with_codes=True))
        if so.has_mask(task):  # kept for relaying: a peer that lacks it asks for it
            ledger.remember_mask(mask_record(so, task))
    return int(meta["round"]), ckpt.path
