"""Defaults that several layers need (config, simulator, demo), each defined once."""

from __future__ import annotations

# The federation's shared seed: it seeds the orthogonal projections (A) and every node's
# train/eval split of the built-in tasks, so all nodes of a federation must agree on it.
FEDERATION_SEED = 20260224
