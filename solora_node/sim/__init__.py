"""In-process multi-device experiments (`solora-node sim`, docs/results.md).

One frozen base model per method run, shared by every simulated device; each device's
adapter state (tensors, optimiser, mask) is swapped into the one injected model when the
device trains or is evaluated. Every device is a federation.Ledger driven by the daemon's
round step over an in-memory transport (sim/rounds.py); methods are strategies.
"""

from solora_node.sim.config import PRESETS, SimConfig, load_sim_config
from solora_node.sim.runner import run_experiment

__all__ = ["PRESETS", "SimConfig", "load_sim_config", "run_experiment"]
