"""In-process multi-device experiments (`solora-node sim`, docs/results.md).

One frozen base model per method run, shared by every simulated device; each device's
adapter state (tensors, optimiser, mask) is swapped into the one injected model when the
device trains or is evaluated. Topology, mixing weights, aggregation and byte counts come
from the daemon's own modules (net.topology, aggregate, net.codec).
"""

from solora_node.sim.config import PRESETS, SimConfig, load_sim_config
from solora_node.sim.runner import run_experiment

__all__ = ["PRESETS", "SimConfig", "load_sim_config", "run_experiment"]
