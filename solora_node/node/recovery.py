"""Applying a recovered copy of this node's own expert (federation/recovery.py decides
which copy): the copy's mask, block and round become this node's."""

from __future__ import annotations

import logging

from solora_node.adapter import AdapterError, apply_block
from solora_node.federation.ledger import Ledger
from solora_node.node.learner import LocalLearner
from solora_node.protocol.blocks import BlockDelta

log = logging.getLogger("solora_node.recovery")


def adopt_copy(learner: LocalLearner, ledger: Ledger, copy: BlockDelta) -> bool:
    """Make the recovered copy this node's own block and mask; False if unusable (the
    caller then publishes at the copy's round)."""
    record = ledger.mask(copy.mask_id)
    if record is None:
        log.warning(
            "recovered copy of round %d came without its mask; starting fresh", copy.version.round
        )
        return False
    try:
        with learner.lock:
            learner.adopt_mask(record)
            apply_block(learner.so, copy, expected_mask_id=copy.mask_id)
    except AdapterError as err:
        log.warning(
            "recovered copy of round %d is unusable (%s); starting fresh", copy.version.round, err
        )
        return False
    log.info(
        "recovered own expert from a peer's copy: round %d of incarnation %d",
        copy.version.round,
        copy.version.incarnation,
    )
    return True
