"""The node's ledger of blocks: what it holds, offers, wants and accepts (net.store.BlockStore).

Called on the event loop by the gRPC server and client while the trainer may be running
in a worker thread, so it never touches the node's own-task B: same-task blocks from
peers are kept here until the round loop aggregates them; foreign blocks (other tasks,
never trained here) are applied to the model at once.

Mask agreement (DESIGN §2.2): nodes of a task train under the mask of their cluster head.
A node that calibrates late adopts a mask it already received from its cluster; a block
from the head under another mask makes the node adopt the head's mask at the next round
boundary; any other same-task block under a foreign mask is refused (MASK_MISMATCH).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import torch

from solora_node.adapter import (
    AdapterError,
    apply_block,
    decode_values,
    install_mask,
    mask_record,
)
from solora_node.adapter.payload import BlockDelta, BlockVersion, MaskRecord
from solora_node.learner import LocalLearner
from solora_node.net.reasons import Reason
from solora_node.net.store import (
    Descriptor,
    ExchangeResult,
    Expectation,
    HeldBlock,
    Hello,
    NeighbourStatus,
    NodeStatus,
    PeerContext,
    PeerInfo,
)
from solora_node.net.validate import expectation_from_mask
from solora_node.topology_view import TopologyView

log = logging.getLogger(__name__)

CODES_EVERY = 10  # rounds between blocks that carry this node's routing codes
MAX_MASKS = 64  # masks kept for relaying and checking; bounded against a flood of new ones


def _newer(a: BlockVersion, b: BlockVersion | None) -> bool:
    """Freshest-version order for foreign blocks: later round, then lower origin id."""
    if b is None:
        return True
    return (a.round, _neg(a.origin)) > (b.round, _neg(b.origin))


def _neg(origin: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in origin)


class BlockBook:
    """Blocks and masks of one node, and its answers to peers."""

    def __init__(
        self,
        learner: LocalLearner,
        *,
        node_id: str,
        federation_id: str,
        address: str,
        staleness_rounds: int,
        known_peers: Callable[[], Iterable[PeerInfo]] = tuple,
        on_peer: Callable[[PeerContext], None] | None = None,
    ) -> None:
        self.learner = learner
        self.so = learner.so
        self.task = learner.task
        self.node_id = node_id
        self.federation_id = federation_id
        self.address = address
        self.staleness_rounds = staleness_rounds
        self._known_peers = known_peers
        self._on_peer = on_peer
        self.round = 0
        self.own: BlockDelta | None = None  # snapshot of own block offered to peers
        self.cluster_blocks: dict[str, BlockDelta] = {}  # origin -> latest same-task block
        self.foreign: dict[str, BlockDelta] = {}  # task -> freshest block applied
        self.masks: collections.OrderedDict[str, MaskRecord] = collections.OrderedDict()
        self.head: str | None = None
        self.pending_mask: MaskRecord | None = None
        self.cluster: str = self.task
        self.neighbours: tuple[NeighbourStatus, ...] = ()
        self.exchanges: collections.deque[ExchangeResult] = collections.deque(maxlen=16)
        self.details: dict[str, str] = {}
        self.topology: TopologyView | None = None  # set by the node at every plan
        self._codes_round: int | None = None

    # ------------------------------------------------------------------ local side

    def publish_own(self, round_: int, encoding: str) -> None:
        """Snapshot own block at a round boundary: what peers get until the next one."""
        from solora_node.adapter import extract_block

        self.round = round_
        if not self.learner.calibrated:
            return
        version = BlockVersion(task=self.task, round=round_, origin=self.node_id)
        # Routing codes come from local data and barely change: ~7 kB that would ride on
        # every ~40 kB block. Sent with the first block and then every CODES_EVERY rounds,
        # which is enough for late joiners and relays to pick them up.
        with_codes = self._codes_round is None or round_ - self._codes_round >= CODES_EVERY
        self.own = extract_block(self.so, self.task, version, encoding, include_codes=with_codes)
        if with_codes:
            self._codes_round = round_
        self.remember_mask(mask_record(self.so, self.task))

    def remember_mask(self, record: MaskRecord) -> None:
        self.masks[record.mask_id] = record
        self.masks.move_to_end(record.mask_id)
        while len(self.masks) > MAX_MASKS:
            self.masks.popitem(last=False)

    def dense(self, delta: BlockDelta) -> dict[str, torch.Tensor]:
        """A same-task block under our mask as dense (d_out x r) tensors, zero off the mask."""
        masks = self.so.masks(self.task)
        shapes = self.so.block_shapes()
        result = {}
        for name, raw in delta.layers.items():
            block = torch.zeros(shapes[name], dtype=torch.float32)
            block[masks[name]] = decode_values(raw).to(torch.float32)
            result[name] = block
        return result

    def fresh_cluster_blocks(self, current_round: int) -> dict[str, BlockDelta]:
        """Same-task neighbours' latest blocks under our mask, within the staleness bound."""
        if not self.learner.calibrated:
            return {}
        mine = self.learner.mask_id
        return {
            origin: delta
            for origin, delta in self.cluster_blocks.items()
            if delta.mask_id == mine
            and delta.version.round + self.staleness_rounds >= current_round
        }

    def cluster_mask_candidate(self) -> MaskRecord | None:
        """At calibration time: the mask this node's cluster already trains under, if any.

        Prefers the head's block, then the lowest origin id (deterministic)."""
        candidates = sorted(
            self.cluster_blocks.values(),
            key=lambda d: (d.version.origin != self.head, d.version.origin),
        )
        for delta in candidates:
            record = self.masks.get(delta.mask_id)
            if record is not None:
                return record
        return None

    def highest_peer_round(self) -> int:
        return max((d.version.round for d in self.cluster_blocks.values()), default=0)

    def held_versions(self) -> list[HeldBlock]:
        blocks = [self.own, *self.foreign.values(), *self.cluster_blocks.values()]
        return [HeldBlock(version=b.version, mask_id=b.mask_id) for b in blocks if b is not None]

    # ------------------------------------------------------------------ BlockStore

    def hello(self) -> Hello:
        return Hello(
            federation_id=self.federation_id,
            fingerprint=self.so.fingerprint,
            node_id=self.node_id,
            task=self.task,
            address=self.address,
            round=self.round,
            held=tuple(self.held_versions()),
            peers=tuple(self._known_peers()),
        )

    def observe_peer(self, peer: PeerContext) -> None:
        if self._on_peer is not None:
            self._on_peer(peer)

    def offer(self, peer: PeerContext) -> Sequence[BlockDelta]:
        theirs: dict[str, list[BlockVersion]] = collections.defaultdict(list)
        for held in peer.hello.held:
            theirs[held.version.task].append(held.version)
        offered = []
        for block in [self.own, *self.foreign.values()]:
            if block is None:
                continue
            versions = theirs.get(block.task, [])
            if block.version in versions:
                continue
            if block.task != peer.hello.task and any(
                not _newer(block.version, v) for v in versions
            ):
                continue  # they already hold this task's expert at least as fresh
            offered.append(block)
        return offered

    def mask(self, mask_id: str) -> MaskRecord | None:
        return self.masks.get(mask_id)

    def _wants_delta(self, d: Descriptor) -> bool:
        if d.task not in self.so.tasks:
            return False
        if d.task == self.task:
            if d.origin == self.node_id or d.round + self.staleness_rounds < self.round:
                return False
            held = self.cluster_blocks.get(d.origin)
            return held is None or d.round > held.version.round
        return _newer(d.version, self.foreign[d.task].version if d.task in self.foreign else None)

    def wants(self, peer: PeerContext, offered: Sequence[Descriptor]) -> Collection[int]:
        deltas = [d for d in offered if d.kind == "delta" and self._wants_delta(d)]
        needed_masks = {d.mask_id for d in deltas if d.mask_id not in self.masks}
        masks = [d for d in offered if d.kind == "mask" and d.mask_id in needed_masks]
        return [d.item_id for d in masks] + [d.item_id for d in deltas]

    def expectation(self, task: str, mask_id: str) -> Expectation | Reason:
        if task not in self.so.tasks:
            return Reason.UNKNOWN_TASK
        record = self.masks.get(mask_id)
        if record is None or record.task != task:
            return Reason.MASK_UNKNOWN
        codes = {name: (self.so.shapes[name][1],) for name in self.so.code_layers}
        return expectation_from_mask(record, codes=codes)

    def mask_shapes(self, task: str) -> Mapping[str, tuple[int, int]] | None:
        return self.so.block_shapes() if task in self.so.tasks else None

    def accept_mask(self, mask: MaskRecord, peer: PeerContext) -> Reason:
        self.remember_mask(mask)
        return Reason.OK

    def accept_delta(self, delta: BlockDelta, peer: PeerContext) -> Reason:
        if delta.task == self.task:
            return self._accept_own_task(delta)
        return self._accept_foreign(delta)

    def _accept_own_task(self, delta: BlockDelta) -> Reason:
        v = delta.version
        if v.round + self.staleness_rounds < self.round:
            return Reason.STALE_ROUND
        if self.learner.calibrated and delta.mask_id != self.learner.mask_id:
            if v.origin != self.head or self.head == self.node_id:
                return Reason.MASK_MISMATCH
            self.pending_mask = self.masks[delta.mask_id]  # adopted at the round boundary
        self.cluster_blocks[v.origin] = delta
        return Reason.OK

    def _accept_foreign(self, delta: BlockDelta) -> Reason:
        held = self.foreign.get(delta.task)
        if held is not None and not _newer(delta.version, held.version):
            return Reason.OK  # a copy raced in through another neighbour; nothing to do
        try:
            if not self.so.has_mask(delta.task) or self.so.mask_id(delta.task) != delta.mask_id:
                install_mask(self.so, self.masks[delta.mask_id])
            apply_block(self.so, delta, expected_mask_id=delta.mask_id)
        except (AdapterError, KeyError) as err:
            log.warning("refused block of %s from %s: %s", delta.task, delta.version.origin, err)
            return Reason.REFUSED_BY_STORE
        self.foreign[delta.task] = delta
        return Reason.OK

    def status(self) -> NodeStatus:
        details = {
            "mask_id": self.learner.mask_id if self.learner.calibrated else "",
            "blocks_held": str(len(self.held_versions())),
            "head": self.head or "",
            **self.details,
        }
        return NodeStatus(
            node_id=self.node_id,
            task=self.task,
            round=self.round,
            federation_id=self.federation_id,
            cluster=self.cluster,
            neighbours=self.neighbours,
            last_exchanges=tuple(self.exchanges),
            details=details,
            topology=self.topology,
        )
