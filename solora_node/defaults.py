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
