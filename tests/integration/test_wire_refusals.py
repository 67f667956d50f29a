"""Every bad input is refused with its reason, counted, and leaves the receiver's store untouched.

Real gRPC on 127.0.0.1 with ephemeral ports. Faults are injected by subclassing the real
session (a Fault enum), or by speaking raw frames, never by mocking the network away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from solora_node._proto import exchange_pb2, service_pb2_grpc
from solora_node.net.client import PeerClient
from solora_node.net.codec import checksum, encode_delta, from_float32
from solora_node.net.convert import descriptor_to_proto, hello_to_proto
from solora_node.net.limits import WireLimits
from solora_node.net.server import PeerServer
from solora_node.protocol.blocks import BlockDelta
from solora_node.protocol.messages import Descriptor, ExchangeResult
from solora_node.protocol.reasons import Reason
from solora_node.testing.memory_store import InMemoryStore
from solora_node.testing.workload import random_mask, synthetic_delta
from tests.support.faults import Fault, faulty_session
from tests.support.observers import CountingObserver

T = TypeVar("T")
TASK = "arithmetic"
LAYOUT = {"model.layers.0.q_proj": (512, 8), "model.layers.0.v_proj": (64, 8)}
MASK = random_mask(TASK, LAYOUT, 1.0, seed=1)  # dense: 4608 values, 9 KiB in fp16
OLD_MASK = random_mask(TASK, LAYOUT, 0.5, seed=2)
SMALL_CHUNKS = WireLimits(chunk_bytes=4096, max_message_bytes=8192)


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def hub_store(**kw: Any) -> InMemoryStore:
    store = InMemoryStore(
        node_id="hub", task=TASK, layouts={TASK: LAYOUT}, required_masks={TASK: MASK.mask_id}, **kw
    )
    store.add_mask(MASK)
    store.add_mask(OLD_MASK)  # known, but not the one this cluster trains under
    return store


def sender_store(*blocks: BlockDelta, **kw: Any) -> InMemoryStore:
    store = InMemoryStore(node_id="a", task=TASK, layouts={TASK: LAYOUT}, **kw)
    store.add_mask(MASK)
    store.add_mask(OLD_MASK)
    for b in blocks:
        store.add_block(b)
    return store


def good_block(round_: int = 0, scale: float = 0.01) -> BlockDelta:
    return synthetic_delta(MASK, round_=round_, origin="a", seed=5, scale=scale)


def with_values(
    block: BlockDelta, layer: str, values: np.ndarray, encoding: str = "float16"
) -> BlockDelta:
    return dataclasses.replace(
        block, layers={**block.layers, layer: from_float32(values, encoding)}
    )


@dataclasses.dataclass
class Outcome:
    result: ExchangeResult
    hub: InMemoryStore
    seen: CountingObserver


def exchange(
    sender: InMemoryStore,
    *,
    hub: InMemoryStore | None = None,
    server_limits: WireLimits = SMALL_CHUNKS,
    client_limits: WireLimits = SMALL_CHUNKS,
    fault: Fault | None = None,
) -> Outcome:
    hub = hub or hub_store()
    seen = CountingObserver()

    async def scenario() -> ExchangeResult:
        server = PeerServer(hub, tls=None, limits=server_limits, observer=seen)
        await server.start()
        client = PeerClient(sender, tls=None, limits=client_limits)
        if fault is not None:
            client.session_class = faulty_session(fault)
        try:
            return await client.exchange(server.address, "hub")
        finally:
            await client.close()
            await server.stop(0)

    return Outcome(run(scenario()), hub, seen)


def assert_refused(outcome: Outcome, reason: Reason) -> None:
    assert outcome.result.refused_by_peer == {reason: 1}, outcome.result
    assert outcome.seen.refused_by_me == {reason: 1}
    assert outcome.hub.received == [] and outcome.hub.blocks == {}


def assert_handshake_refused(outcome: Outcome, reason: Reason) -> None:
    assert outcome.result.reason is reason, outcome.result
    assert outcome.seen.handshakes_refused == {reason: 1}
    assert outcome.hub.received == [] and outcome.hub.peers == {}


def test_good_block_is_accepted() -> None:
    outcome = exchange(sender_store(good_block()))
    assert outcome.result.ok and outcome.result.items_sent == 1
    assert outcome.hub.received == [good_block()]


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"federation_id": "another-federation"}, Reason.OTHER_FEDERATION),
        ({"fingerprint": "other-projections"}, Reason.FINGERPRINT_MISMATCH),
    ],
)
def test_incompatible_peer_is_refused_at_handshake(kw: dict[str, str], reason: Reason) -> None:
    assert_handshake_refused(exchange(sender_store(good_block(), **kw)), reason)


def test_wrong_shape() -> None:
    block = with_values(good_block(), "model.layers.0.v_proj", np.zeros(511, np.float32))
    assert_refused(exchange(sender_store(block)), Reason.WRONG_SHAPE)


def test_wrong_dtype() -> None:
    values = np.zeros(512, np.float32)
    block = with_values(good_block(), "model.layers.0.v_proj", values, encoding="float32")
    assert_refused(exchange(sender_store(block)), Reason.WRONG_DTYPE)


def test_wrong_mask_id() -> None:
    block = synthetic_delta(OLD_MASK, round_=0, origin="a", seed=5)
    assert_refused(exchange(sender_store(block)), Reason.MASK_MISMATCH)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_not_finite(bad: float) -> None:
    values = np.zeros(512, np.float32)
    values[7] = bad
    block = with_values(good_block(), "model.layers.0.v_proj", values)
    assert_refused(exchange(sender_store(block)), Reason.NOT_FINITE)


def test_norm_above_bound() -> None:
    limits = dataclasses.replace(SMALL_CHUNKS, norm_bound=1.0)
    assert_refused(
        exchange(sender_store(good_block(scale=1.0)), server_limits=limits), Reason.NORM_TOO_LARGE
    )


def test_round_older_than_staleness_bound() -> None:
    limits = dataclasses.replace(SMALL_CHUNKS, staleness_rounds=3)
    hub = hub_store(round_=10)
    assert_refused(
        exchange(sender_store(good_block(round_=6)), hub=hub, server_limits=limits),
        Reason.STALE_ROUND,
    )


def test_declared_size_above_limit_is_refused_before_transfer() -> None:
    limits = dataclasses.replace(SMALL_CHUNKS, max_delta_bytes=4096)
    outcome = exchange(sender_store(good_block()), server_limits=limits)
    assert_refused(outcome, Reason.TOO_LARGE)
    assert outcome.result.bytes_sent < 1024  # no chunk was sent


def test_oversized_message_breaks_the_stream_and_nothing_is_applied() -> None:
    outcome = exchange(
        sender_store(good_block()), fault=Fault.OVERSIZED_MESSAGE, client_limits=WireLimits()
    )
    assert outcome.result.reason in (Reason.TOO_LARGE, Reason.UNAVAILABLE), outcome.result
    # gRPC drops the message before our code sees it; the receiver counts the item it lost.
    assert outcome.seen.refused_by_me == {Reason.TRUNCATED: 1}
    assert outcome.hub.received == [] and outcome.hub.blocks == {}


def test_corrupted_chunk_fails_the_checksum() -> None:
    assert_refused(
        exchange(sender_store(good_block()), fault=Fault.CORRUPT_CHUNK), Reason.CHECKSUM_MISMATCH
    )


def test_garbage_bytes_are_malformed() -> None:
    assert_refused(exchange(sender_store(good_block()), fault=Fault.GARBAGE), Reason.MALFORMED)


def test_item_cut_short_by_done_is_truncated() -> None:
    assert_refused(exchange(sender_store(good_block()), fault=Fault.EARLY_DONE), Reason.TRUNCATED)


def test_silent_sender_hits_the_chunk_deadline() -> None:
    limits = dataclasses.replace(SMALL_CHUNKS, chunk_deadline_s=0.3)
    outcome = exchange(sender_store(good_block()), fault=Fault.STALL, server_limits=limits)
    assert outcome.seen.refused_by_me == {Reason.TIMEOUT: 1}
    assert outcome.result.reason is Reason.TIMEOUT  # the server's reason, carried in its status
    assert outcome.hub.received == []


def test_stream_closed_mid_item_is_truncated() -> None:
    """Raw frames: hello, offer, first chunk, then half-close the stream."""
    hub = hub_store()
    seen = CountingObserver()
    block = encode_delta(good_block())
    offered = Descriptor(
        0, "delta", TASK, 0, "a", MASK.mask_id, "float16", len(block), checksum(block)
    )

    async def scenario() -> list[exchange_pb2.Frame]:
        server = PeerServer(hub, tls=None, limits=SMALL_CHUNKS, observer=seen)
        await server.start()
        channel = grpc.aio.insecure_channel(server.address)
        try:
            call = service_pb2_grpc.SoloraStub(channel).Exchange()  # type: ignore[no-untyped-call]
            hello = sender_store().hello()
            await call.write(exchange_pb2.Frame(hello=hello_to_proto(hello)))
            await call.write(
                exchange_pb2.Frame(offer=exchange_pb2.Offer(items=[descriptor_to_proto(offered)]))
            )
            frames: list[exchange_pb2.Frame] = []
            while not any(f.HasField("want") for f in frames):
                frames.append(await call.read())
            chunk = exchange_pb2.Chunk(item_id=0, index=0, total=3, data=block[:4096])
            await call.write(exchange_pb2.Frame(chunk=chunk))
            await call.done_writing()
            with contextlib.suppress(grpc.aio.AioRpcError):  # the server aborts: truncated
                while (frame := await call.read()) is not grpc.aio.EOF:
                    frames.append(frame)
            return frames
        finally:
            await channel.close()
            await server.stop(0)

    frames = run(scenario())
    acks = [f.ack for f in frames if f.HasField("ack")]
    assert [Reason.from_proto(a.reason) for a in acks] == [Reason.TRUNCATED]
    assert seen.refused_by_me == {Reason.TRUNCATED: 1}
    assert hub.received == [] and hub.blocks == {}


def test_first_frame_must_be_a_hello() -> None:
    hub = hub_store()

    async def scenario() -> exchange_pb2.Frame:
        server = PeerServer(hub, tls=None)
        await server.start()
        channel = grpc.aio.insecure_channel(server.address)
        try:
            call = service_pb2_grpc.SoloraStub(channel).Exchange()  # type: ignore[no-untyped-call]
            await call.write(exchange_pb2.Frame(chunk=exchange_pb2.Chunk(data=b"\0" * 100)))
            frame: exchange_pb2.Frame = await call.read()
            return frame
        finally:
            await channel.close()
            await server.stop(0)

    reply = run(scenario())
    assert Reason.from_proto(reply.hello_reply.reason) is Reason.PROTOCOL_ERROR
    assert hub.received == []
