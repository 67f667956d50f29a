"""Defaults that several layers need (config, simulator, demo), each defined once."""

from __future__ import annotations

# The federation's shared seed: it seeds the orthogonal projections (A) and every node's
# train/eval split of the built-in tasks, so all nodes of a federation must agree on it.
FEDERATION_SEED = 20260224

# Other tasks' experts a node holds and relays at most (config federation.max_foreign_experts):
# a node's bytes per round and foreign-expert memory stay bounded by it whatever the number
# of tasks (docs/scale.md). 4 keeps every expert of a federation of up to 5 tasks (the
# usual size), and beyond that the 4 its prompts used last plus what neighbours ask for.
DEFAULT_MAX_FOREIGN_EXPERTS = 4

# The learning rate, tied to density: SO-LoRA trains a `density` share of B's entries
# under a frozen A, so each step moves the adapter about `density` times as far as a
# dense adapter's at the same rate. The rule lr = DENSE_LR / density keeps the step size
# of a dense LoRA adapter. On the validation splits (docs/results.md, "The study") dense
# LoRA-DFL did best at 6e-3 (of 2e-3, 6e-3, 2e-2) and SO-LoRA at density 0.1 at 6e-2 =
# 6e-3 / 0.1 (of 6e-3, 2e-2, 6e-2), where 1/sqrt(density) would give 1.9e-2.
DENSE_LR = 6e-3
MAX_AUTO_LR = 0.1


def auto_lr(density: float) -> float:
    """The learning rate when `train.lr` is not set: DENSE_LR / density, at most 0.1."""
    return min(DENSE_LR / density, MAX_AUTO_LR)
