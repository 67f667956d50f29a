"""Training-free `auto` gate of the implicit MoE: a regularised dual basis of the task codes.

H = [mu_1 .. mu_T] (d x T), D = H (H^T H + lambda I)^-1, g(x) = softmax(beta * D^T xhat).
D^T H = (H^T H + lambda I)^-1 H^T H ~ I: each task's code scores ~1 on its own column and
~0 on the others, even though raw LLM states of different tasks are highly collinear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from solora_node.adapter.calibration import Batch, compute_codes, pooled_states, stack_codes
from solora_node.adapter.errors import AdapterError
from solora_node.adapter.model import SoLoraModel
from solora_node.adapter.prompts import prompt_batches

DEFAULT_RIDGE = 1e-2
DEFAULT_BETA = 20.0


def dual_basis(codes: torch.Tensor, ridge: float = DEFAULT_RIDGE) -> torch.Tensor:
    """D^T (T x d) from codes H^T (T x d), computed in float64 (the Gram matrix is ill-posed)."""
    h_t = codes.to(torch.float64)
    gram = h_t @ h_t.T + ridge * torch.eye(h_t.shape[0], dtype=torch.float64)
    return torch.linalg.solve(gram, h_t).to(torch.float32)


def gate_weights(
    states: torch.Tensor, dual: torch.Tensor, beta: float = DEFAULT_BETA, top1: bool = False
) -> torch.Tensor:
    """g per sample (b x T) from pooled states xhat (b x d)."""
    scores = states.to(torch.float32) @ dual.T
    if top1:
        return torch.nn.functional.one_hot(scores.argmax(dim=-1), dual.shape[0]).to(torch.float32)
    return torch.softmax(beta * scores, dim=-1)


def task_codes(
    so: SoLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """mu_t per code layer from a node's own task inputs (prompt format as in training)."""
    if not texts:
        raise AdapterError("routing codes need at least one local input text")
    return compute_codes(so, prompt_batches(tokenizer, texts, batch_size))


def missing_codes(so: SoLoraModel) -> list[str]:
    return [
        t
        for t in so.tasks
        if t not in so.codes or any(n not in so.codes[t] for n in so.code_layers)
    ]


def router_basis(so: SoLoraModel, ridge: float = DEFAULT_RIDGE) -> torch.Tensor:
    """D^T for the model's codes; every task needs codes (they travel with the blocks)."""
    missing = missing_codes(so)
    if missing:
        raise AdapterError(
            f"auto routing needs routing codes for every task; missing for {missing}"
        )
    return dual_basis(stack_codes(so, so.codes), ridge)


def route(
    so: SoLoraModel,
    batch: Batch,
    beta: float = DEFAULT_BETA,
    top1: bool = False,
    ridge: float = DEFAULT_RIDGE,
) -> torch.Tensor:
    """Gate weights (b x T) for the prompts in `batch`; one extra base-model pass."""
    return gate_weights(pooled_states(so, batch), router_basis(so, ridge), beta, top1)


def route_held(
    so: SoLoraModel, batch: Batch, beta: float = DEFAULT_BETA, ridge: float = DEFAULT_RIDGE
) -> torch.Tensor:
    """Soft gate weights (b x T) over the tasks whose codes the model holds; the others get 0.

    A serving node may not have received every task's code yet (codes travel with the
    blocks); it routes among the experts it can tell apart instead of refusing."""
    held = [t for t in so.tasks if t not in missing_codes(so)]
    if not held:
        raise AdapterError("auto routing needs routing codes; this model holds none yet")
    dual = dual_basis(stack_codes(so, so.codes, held), ridge)
    weights = gate_weights(pooled_states(so, batch), dual, beta)
    full = torch.zeros(weights.shape[0], len(so.tasks))
    full[:, [so.tasks.index(t) for t in held]] = weights
    return full
