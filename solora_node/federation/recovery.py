"""Peers as backup: a node that starts without any checkpoint first asks its neighbours
for the copies they hold of its own expert, and resumes from the freshest one.
The policy is here (a ledger holds one); node/recovery.py applies the copy.

Its peers keep its block (as a foreign expert, or as a cluster neighbour's block), so a
wiped data_dir costs a few exchanges, not the whole training. Only copies of earlier
incarnations of this node id are taken (never its own current output); when none
arrives, the node starts fresh and its new incarnation makes peers accept its blocks.
"""

from __future__ import annotations

from solora_node.federation.versions import newer
from solora_node.protocol.blocks import BlockDelta, BlockVersion


class OwnExpertRecovery:
    """Collects copies of this node's own block from peers while `active`."""

    def __init__(self, node_id: str, incarnation: int) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.active = False
        self.best: BlockDelta | None = None

    def wants(self, version: BlockVersion) -> bool:
        """A copy of our own block from a previous life, fresher than what we have."""
        if not self.active or version.origin != self.node_id:
            return False
        if version.incarnation == self.incarnation:
            return False
        return self.best is None or newer(version, self.best.version)

    def offer(self, delta: BlockDelta) -> None:
        if self.wants(delta.version):
            self.best = delta

    def finish(self) -> BlockDelta | None:
        self.active = False
        return self.best
