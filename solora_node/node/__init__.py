"""The node daemon: lifecycle, peers, checkpoint snapshot, telemetry and the learner,
wiring the federation core (solora_node.federation) to the network, the disk and metrics."""

from solora_node.node.daemon import Node, run_node

__all__ = ["Node", "run_node"]
