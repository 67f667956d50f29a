"""Peers as backup: a node that starts without any checkpoint first asks its neighbours
for the copies they hold of its own expert, and resumes from the freshest one.

Its peers keep its block (as a foreign expert, or as a cluster neighbour's block), so a
wiped data_dir costs a few exchanges, not the whole training. Only copies of earlier
incarnations of this node id are taken (never its own current output); when none
arrives, the node starts fresh and its new incarnation makes peers accept its blocks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from solora_node.adapter import AdapterError, apply_block
from solora_node.adapter.payload import BlockDelta, BlockVersion
from solora_node.incarnation import newer_version

if TYPE_CHECKING:
    from solora_node.book import BlockBook
    from solora_node.learner import LocalLearner

log = logging.getLogger("solora_node.recovery")


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
        return self.best is None or newer_version(version, self.best.version)

    def offer(self, delta: BlockDelta) -> None:
        if self.wants(delta.version):
            self.best = delta

    def finish(self) -> BlockDelta | None:
        self.active = False
        return self.best


def adopt_copy(learner: LocalLearner, book: BlockBook, copy: BlockDelta, encoding: str) -> bool:
    """Make the recovered copy this node's own block, mask and round; False if unusable."""
    record = book.masks.get(copy.mask_id)
    if record is None:
        log.warning("recovered copy of round %d came without its mask; starting fresh",
                    copy.version.round)  # fmt: skip
        return False
    try:
        with learner.lock:
            learner.adopt_mask(record)
            apply_block(learner.so, copy, expected_mask_id=copy.mask_id)
    except AdapterError as err:
        log.warning("recovered copy of round %d is unusable (%s); starting fresh",
                    copy.version.round, err)  # fmt: skip
        return False
    book.publish_own(copy.version.round, encoding)
    log.info(
        "recovered own expert from a peer's copy: round %d of incarnation %d",
        copy.version.round,
        copy.version.incarnation,
    )
    return True
