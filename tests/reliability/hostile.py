"""Fault-injection tools for end-to-end tests against real `solora-node run` processes.

A hostile or broken peer is the real client with one fault injected by the session of
tests/support/faults.py, never a mock of the network: what reaches the node went through
real TLS, real gRPC and the node's own validation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from solora_node.adapter import masks as mask_ops
from solora_node.net.client import PeerClient
from solora_node.net.codec import from_float32
from solora_node.net.limits import WireLimits
from solora_node.net.security import TlsMaterial
from solora_node.protocol.blocks import BlockDelta, MaskRecord, RawTensor
from solora_node.protocol.messages import ExchangeResult
from solora_node.store import CheckpointStore
from solora_node.testing.memory_store import InMemoryStore
from solora_node.testing.workload import synthetic_delta
from tests.support.faults import Fault, faulty_session

T = TypeVar("T")
Layout = dict[str, tuple[int, int]]


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def record(scenario: str, **figures: Any) -> None:
    """Append one scenario's figures to $SOLORA_RELIABILITY_LOG (JSON lines) for the docs."""
    path = os.environ.get("SOLORA_RELIABILITY_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"scenario": scenario, **figures}, default=str) + "\n")


@dataclasses.dataclass(frozen=True)
class TargetFacts:
    """What a federation member knows about a node of its federation (from its checkpoint)."""

    federation_id: str
    fingerprint: str
    round: int
    layouts: dict[str, Layout]  # task -> layer -> dense (d_out, r) of B
    blocks: dict[str, dict[str, torch.Tensor]]  # task -> layer -> B, as checkpointed


def target_facts(data_dir: Path) -> TargetFacts:
    ckpt = CheckpointStore(data_dir / "checkpoints", keep=2, readonly=True).load_latest()
    assert ckpt is not None, f"no checkpoint in {data_dir}"
    layouts: dict[str, Layout] = {}
    blocks: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in ckpt.tensors.items():
        kind, _, rest = key.partition("/")
        task, _, layer = rest.partition("/")
        if kind == "B":
            layouts.setdefault(task, {})[layer] = (int(tensor.shape[0]), int(tensor.shape[1]))
            blocks.setdefault(task, {})[layer] = tensor.clone()
    return TargetFacts(ckpt.federation, ckpt.fingerprint, ckpt.round, layouts, blocks)


def adapter_mask(
    task: str, layout: Mapping[str, tuple[int, int]], density: float, seed: int
) -> MaskRecord:
    """A mask whose mask_id is the adapter's content hash, so a node can install it."""
    gen = torch.Generator().manual_seed(seed)
    masks = {name: torch.rand(shape, generator=gen) < density for name, shape in layout.items()}
    for m in masks.values():
        m.view(-1)[0] = True  # never an empty layer
    layers = {
        name: RawTensor("uint8", (len(p := mask_ops.pack_mask(m)),), p) for name, m in masks.items()
    }
    return MaskRecord(
        task=task, mask_id=mask_ops.mask_id(masks), layers=layers, shapes=dict(layout)
    )


def block_under(
    mask: MaskRecord, *, round_: int, origin: str, scale: float = 0.01, seed: int = 5
) -> BlockDelta:
    return synthetic_delta(mask, round_=round_, origin=origin, seed=seed, scale=scale)


def with_layer(block: BlockDelta, values: np.ndarray, encoding: str = "float16") -> BlockDelta:
    """The block with its first layer's values replaced (shape, dtype or values broken)."""
    first = sorted(block.layers)[0]
    return dataclasses.replace(
        block, layers={**block.layers, first: from_float32(values, encoding)}
    )


def first_layer_size(block: BlockDelta) -> int:
    return int(block.layers[sorted(block.layers)[0]].shape[0])


def hostile_store(
    facts: TargetFacts,
    *,
    node_id: str,
    task: str,
    blocks: list[BlockDelta] = (),  # type: ignore[assignment]
    masks: list[MaskRecord] = (),  # type: ignore[assignment]
    **kw: Any,
) -> InMemoryStore:
    """A store that offers exactly `blocks` (and their masks) and takes nothing."""
    fields: dict[str, Any] = {
        "federation_id": facts.federation_id,
        "fingerprint": facts.fingerprint,
        **kw,
    }
    store = InMemoryStore(node_id=node_id, task=task, layouts=facts.layouts, take=False, **fields)
    for m in masks:
        store.add_mask(m)
    for b in blocks:
        store.add_block(b)
    return store


def exchange_with(
    address: str,
    target_id: str,
    store: InMemoryStore,
    tls: TlsMaterial | None,
    *,
    fault: Fault = Fault.NONE,
    limits: WireLimits | None = None,
) -> ExchangeResult:
    async def go() -> ExchangeResult:
        client = PeerClient(
            store, tls=tls, limits=limits or WireLimits(chunk_bytes=4096, max_message_bytes=4 << 20)
        )
        client.session_class = faulty_session(fault)
        try:
            return await client.exchange(address, expected_node_id=target_id)
        finally:
            await client.close()

    return run(go())


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
