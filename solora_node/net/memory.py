"""An in-memory BlockStore and synthetic blocks: the reference store for tests and benchmarks.

It keeps every block version it receives and offers every version a peer does
not announce, which is enough to show what the transport does; the daemon's
store adds the method's policy (clusters, staleness, aggregation).
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from solora_node.adapter.payload import BlockDelta, BlockVersion, MaskRecord, RawTensor
from solora_node.net.codec import from_float32
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

Layout = Mapping[str, tuple[int, int]]  # layer -> dense (d_out, r) of B
VersionKey = tuple[str, int, str]  # (task, round, origin)


def default_round_layout(layers: int = 30, rank: int = 8) -> dict[str, tuple[int, int]]:
    """B shapes of the default model (SmolLM2-135M): q_proj 576->576, v_proj 576->192."""
    layout: dict[str, tuple[int, int]] = {}
    for i in range(layers):
        layout[f"model.layers.{i}.self_attn.q_proj"] = (576, rank)
        layout[f"model.layers.{i}.self_attn.v_proj"] = (192, rank)
    return layout


def random_mask(task: str, layout: Layout, density: float, seed: int) -> MaskRecord:
    """A seeded mask keeping round(density * d_out * r) entries per layer."""
    rng = np.random.default_rng(seed)
    layers: dict[str, RawTensor] = {}
    digest = hashlib.sha256(task.encode())
    for name, (rows, cols) in layout.items():
        size = rows * cols
        keep = max(1, round(density * size))
        bits = np.zeros(size, dtype=np.uint8)
        bits[rng.choice(size, size=keep, replace=False)] = 1
        packed = np.packbits(bits, bitorder="big")
        layers[name] = RawTensor(dtype="uint8", shape=(packed.size,), data=packed.tobytes())
        digest.update(name.encode())
        digest.update(packed.tobytes())
    return MaskRecord(
        task=task, mask_id=digest.hexdigest()[:16], layers=layers, shapes=dict(layout)
    )


def synthetic_delta(
    mask: MaskRecord,
    *,
    round_: int,
    origin: str,
    encoding: str = "float16",
    seed: int = 0,
    scale: float = 0.01,
    codes: Mapping[str, tuple[int, ...]] | None = None,
) -> BlockDelta:
    """Random values under `mask` (1-d per layer, in mask order)."""
    rng = np.random.default_rng(seed)
    layers = {}
    for name, tensor in mask.layers.items():
        rows, cols = mask.shapes[name]
        count = int(np.unpackbits(np.frombuffer(tensor.data, np.uint8), count=rows * cols).sum())
        layers[name] = from_float32(rng.standard_normal(count, dtype=np.float32) * scale, encoding)
    code_tensors = {
        name: from_float32(rng.standard_normal(shape, dtype=np.float32), "float32")
        for name, shape in (codes or {}).items()
    }
    return BlockDelta(
        version=BlockVersion(task=mask.task, round=round_, origin=origin),
        mask_id=mask.mask_id,
        encoding=encoding,
        layers=layers,
        codes=code_tensors,
    )


class InMemoryStore:
    """A BlockStore that keeps everything in dicts."""

    def __init__(
        self,
        *,
        node_id: str,
        task: str,
        layouts: Mapping[str, Layout],
        federation_id: str = "test-federation",
        fingerprint: str = "test-fingerprint",
        address: str = "",
        round_: int = 0,
        codes: Mapping[str, tuple[int, ...]] | None = None,
        required_masks: Mapping[str, str] | None = None,
        take: bool = True,
    ) -> None:
        self.node_id = node_id
        self.task = task
        self.layouts = {t: dict(layout) for t, layout in layouts.items()}
        self.federation_id = federation_id
        self.fingerprint = fingerprint
        self.address = address
        self.round = round_
        self.codes = dict(codes or {})
        # task -> the one mask_id this node accepts blocks under (agreed in its cluster).
        self.required_masks = dict(required_masks or {})
        self.take = take  # False: only give (a benchmark source)
        self.blocks: dict[VersionKey, BlockDelta] = {}
        self.masks: dict[str, MaskRecord] = {}
        self.peers: dict[str, PeerInfo] = {}
        self.exchanges: collections.deque[ExchangeResult] = collections.deque(maxlen=16)
        self.received: list[BlockDelta] = []
        # Counting a mask's bits is not free: once per (task, mask_id).
        self._expectations: dict[tuple[str, str], Expectation] = {}

    # ------------------------------------------------------------ local side

    def add_block(self, delta: BlockDelta) -> None:
        v = delta.version
        self.blocks[(v.task, v.round, v.origin)] = delta

    def add_mask(self, mask: MaskRecord) -> None:
        self.masks[mask.mask_id] = mask

    def record(self, result: ExchangeResult) -> None:
        self.exchanges.append(result)

    # ------------------------------------------------------------ BlockStore

    def hello(self) -> Hello:
        held = tuple(HeldBlock(version=b.version, mask_id=b.mask_id) for b in self.blocks.values())
        return Hello(
            federation_id=self.federation_id,
            fingerprint=self.fingerprint,
            node_id=self.node_id,
            task=self.task,
            address=self.address,
            round=self.round,
            held=held,
            peers=tuple(self.peers.values()),
        )

    def observe_peer(self, peer: PeerContext) -> None:
        h = peer.hello
        self.peers[h.node_id] = PeerInfo(node_id=h.node_id, address=h.address, task=h.task)

    def offer(self, peer: PeerContext) -> Sequence[BlockDelta]:
        theirs = {(h.version.task, h.version.round, h.version.origin) for h in peer.hello.held}
        return [b for key, b in self.blocks.items() if key not in theirs]

    def mask(self, mask_id: str) -> MaskRecord | None:
        return self.masks.get(mask_id)

    def wants(self, peer: PeerContext, offered: Sequence[Descriptor]) -> Collection[int]:
        if not self.take:
            return []
        offered_masks = {d.mask_id for d in offered if d.kind == "mask"}
        wanted = []
        for d in offered:
            if d.task not in self.layouts:
                continue
            if d.kind == "mask":
                if d.mask_id not in self.masks:
                    wanted.append(d.item_id)
            elif (d.task, d.round, d.origin) not in self.blocks and (
                d.mask_id in self.masks or d.mask_id in offered_masks
            ):
                wanted.append(d.item_id)
        return wanted

    def expectation(self, task: str, mask_id: str) -> Expectation | Reason:
        if task not in self.layouts:
            return Reason.UNKNOWN_TASK
        required = self.required_masks.get(task)
        if required is not None and mask_id != required:
            return Reason.MASK_MISMATCH
        cached = self._expectations.get((task, mask_id))
        if cached is not None:
            return cached
        mask = self.masks.get(mask_id)
        if mask is None or mask.task != task:
            return Reason.MASK_UNKNOWN
        expectation = expectation_from_mask(mask, codes=self.codes)
        self._expectations[(task, mask_id)] = expectation
        return expectation

    def mask_shapes(self, task: str) -> Mapping[str, tuple[int, int]] | None:
        return self.layouts.get(task)

    def accept_delta(self, delta: BlockDelta, peer: PeerContext) -> Reason:
        self.add_block(delta)
        self.received.append(delta)
        return Reason.OK

    def accept_mask(self, mask: MaskRecord, peer: PeerContext) -> Reason:
        self.add_mask(mask)
        return Reason.OK

    def status(self) -> NodeStatus:
        return NodeStatus(
            node_id=self.node_id,
            task=self.task,
            round=self.round,
            federation_id=self.federation_id,
            cluster=self.task,
            neighbours=tuple(NeighbourStatus(peer=p) for p in self.peers.values()),
            last_exchanges=tuple(self.exchanges),
            details={"blocks": str(len(self.blocks)), "masks": str(len(self.masks))},
        )
