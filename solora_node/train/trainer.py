"""Local training of the trainable adapter parameters on this node's examples."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from solora_node.data.encode import collate, encode_example, pad_id
from solora_node.data.examples import Example
from solora_node.errors import SoloraError
from solora_node.train.sampling import EpochSampler
from solora_node.train.settings import TrainSettings

GradMasks = Mapping[nn.Parameter, torch.Tensor]
OPTIMIZER_SLOTS = ("step", "exp_avg", "exp_avg_sq")
STATE_FORMAT = 1


class TrainStateError(SoloraError):
    """A saved trainer state does not fit this trainer (other params, shapes or format)."""


class LocalTrainer:
    """AdamW on `params` only, with optional fixed sparsity masks on their gradients.

    Masked entries (mask == 0) get zero gradient, so Adam's moments stay zero there and
    the entries keep their value exactly, weight decay included.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        examples: list[Example],
        params: list[nn.Parameter],
        cfg: TrainSettings,
        grad_masks: GradMasks | None = None,
    ) -> None:
        if not examples:
            raise SoloraError("trainer: no training examples")
        # Process-wide. More threads than idle cores is far worse than fewer: on a busy
        # 2-core box, 2 threads made a SmolLM2 step ~10x slower than 1 (OpenMP barriers
        # wait for a descheduled thread), so several nodes per machine want threads=1.
        torch.set_num_threads(cfg.threads)
        self.model = model
        self.cfg = cfg
        self.step = 0
        self._pad = pad_id(tokenizer)
        self._encoded = [encode_example(tokenizer, ex, cfg.max_seq_len) for ex in examples]
        self._sampler = EpochSampler(len(examples), cfg.seed)
        self.params: list[nn.Parameter] = []
        self.grad_masks: dict[nn.Parameter, torch.Tensor] = {}
        self.optimizer: torch.optim.AdamW
        self.reset_optimizer(params, grad_masks)

    def reset_optimizer(
        self, params: Iterable[nn.Parameter], grad_masks: GradMasks | None = None
    ) -> None:
        """Fresh AdamW state for `params` (e.g. after the sparsity mask changed)."""
        self.params = list(params)
        if not self.params:
            raise SoloraError("trainer: no trainable parameters")
        for param in self.params:
            param.requires_grad_(True)
        masks = dict(grad_masks or {})
        unknown = [p for p in masks if all(p is not q for q in self.params)]
        if unknown:
            raise SoloraError("trainer: a grad mask refers to a parameter that is not trained")
        for param, mask in masks.items():
            if mask.shape != param.shape:
                raise SoloraError(
                    f"trainer: grad mask shape {tuple(mask.shape)}, "
                    f"expected the parameter's {tuple(param.shape)}"
                )
        self.grad_masks = {
            p: m.detach().to(device=p.device, dtype=torch.bool) for p, m in masks.items()
        }
        self.optimizer = torch.optim.AdamW(
            self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )

    def train_steps(self, n: int, progress: bool = False) -> list[float]:
        """Run n optimizer steps; returns each step's mean loss over answer tokens."""
        losses: list[float] = []
        was_training = self.model.training
        self.model.train()
        bar = tqdm(total=n, desc="train", unit="step", file=sys.stderr, disable=not progress)
        try:
            for _ in range(n):
                losses.append(self._one_step())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        finally:
            bar.close()
            self.model.train(was_training)
        return losses

    def _one_step(self) -> float:
        batch = collate(
            [self._encoded[i] for i in self._sampler.next_batch(self.cfg.batch_size)], self._pad
        )
        # Dropout (if the adapter has any) draws from a generator seeded by the step, so a
        # resumed or repeated run makes the same draws.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.step)
            loss = self.model(**batch).loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        frozen = {p: p.detach()[~m].clone() for p, m in self.grad_masks.items()}
        for param, mask in self.grad_masks.items():
            if param.grad is not None:
                param.grad.mul_(mask)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        # AdamW's decoupled weight decay would still shrink masked entries; put them back.
        with torch.no_grad():
            for param, mask in self.grad_masks.items():
                param[~mask] = frozen[param]
        self.step += 1
        return float(loss.detach())

    # -- state -------------------------------------------------------------------------

    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, int | float | str]]:
        """(tensors, metadata) for safetensors + JSON: optimizer moments, step, sampler."""
        tensors: dict[str, torch.Tensor] = {}
        for index, param in enumerate(self.params):
            state = self.optimizer.state.get(param, {})
            for slot in OPTIMIZER_SLOTS:
                if slot in state:
                    value = torch.as_tensor(state[slot]).detach().cpu().contiguous()
                    tensors[f"optimizer.{index}.{slot}"] = value
        meta: dict[str, int | float | str] = {
            "format": STATE_FORMAT,
            "step": self.step,
            "seed": self.cfg.seed,
            "sampler_epoch": self._sampler.epoch,
            "sampler_position": self._sampler.position,
            "sampler_size": self._sampler.size,
            "param_count": len(self.params),
        }
        return tensors, meta

    def import_state(
        self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, int | float | str]
    ) -> None:
        """Restore what export_state() produced; refuses a state made for other params."""
        expected = {
            "format": STATE_FORMAT,
            "param_count": len(self.params),
            "sampler_size": self._sampler.size,
        }
        for key, wanted in expected.items():
            if meta.get(key) != wanted:
                raise TrainStateError(
                    f"trainer state: {key} is {meta.get(key)!r}, expected {wanted!r}"
                )
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            prefix, index_text, slot = [*name.split("."), "", ""][:3]
            if prefix != "optimizer" or not index_text.isdigit() or slot not in OPTIMIZER_SLOTS:
                raise TrainStateError(f"trainer state: unexpected tensor {name!r}")
            index = int(index_text)
            if index >= len(self.params):
                raise TrainStateError(f"trainer state: tensor {name!r} has no parameter")
            param = self.params[index]
            if slot != "step" and value.shape != param.shape:
                raise TrainStateError(
                    f"trainer state: {name} has shape {tuple(value.shape)}, "
                    f"expected {tuple(param.shape)}"
                )
            device = "cpu" if slot == "step" else param.device
            state.setdefault(index, {})[slot] = value.detach().to(device).clone()
        self.optimizer.load_state_dict(
            {
                "state": state,
                "param_groups": self.optimizer.state_dict()["param_groups"],
            }
        )
        self.step = int(meta["step"])
        self._sampler.restore(int(meta["sampler_epoch"]), int(meta["sampler_position"]))

    def state_dict(self) -> dict[str, torch.Tensor | int | float | str]:
        """export_state() as one flat dict (tensor keys start with 'optimizer.')."""
        tensors, meta = self.export_state()
        return {**tensors, **meta}

    def load_state_dict(self, state: Mapping[str, torch.Tensor | int | float | str]) -> None:
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        meta = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        self.import_state(tensors, meta)
