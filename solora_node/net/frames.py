"""Exchange frames carrying chunks, written and read without protobuf copies.

Most of an exchange's bytes travel in Frames carrying a Chunk (protos/solora/v1/
exchange.proto). Parsed by the protobuf runtime, each chunk's data was copied twice on
arrival (into the parsed message, then out of it on reading the field), on top of the
bytes gRPC hands over. `parse_frame` reads a chunk frame in the layout protobuf writes
it (fields in number order, each at most once) and returns its data as a read-only view
of gRPC's bytes; any other frame, or a chunk frame in any other layout, goes to the
protobuf parser, so what a frame means never depends on which path read it. On the way
out, a chunk frame was copied three times (joining the chunk, into the message, out by
serialising it); `EncodedChunk` is the serialised frame, written once from views of the
item's parts (net/chunks.py `chunk_frame_head`). The wire format is unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from solora_node._proto import exchange_pb2
from solora_node.net.chunks import chunk_frame_head

# Tags (field number << 3 | wire type) of the fields the fast path reads.
_ROUND = 1 << 3  # Frame.round, varint
_CHUNK = 6 << 3 | 2  # Frame.chunk, length-delimited
_CHUNK_FIELDS = (1 << 3, 2 << 3, 3 << 3)  # Chunk.item_id, index, total: varints
_DATA = 4 << 3 | 2  # Chunk.data, length-delimited
_UINT32, _UINT64 = 1 << 32, 1 << 64


@dataclass(frozen=True)
class ChunkFrame:
    """A Frame carrying a Chunk, its data a read-only view of the received message."""

    round: int
    item_id: int
    index: int
    total: int
    data: memoryview


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk Frame already serialised, exactly as protobuf would serialise it."""

    round: int
    item_id: int
    index: int
    total: int
    wire: bytes

    @classmethod
    def build(
        cls, round_: int, item_id: int, index: int, total: int, views: Sequence[memoryview]
    ) -> EncodedChunk:
        nbytes = sum(map(len, views))
        head = chunk_frame_head(round_, item_id, index, total, nbytes)
        return cls(round_, item_id, index, total, b"".join([head, *views]))


OutFrame = exchange_pb2.Frame | EncodedChunk


def serialize_frame(frame: OutFrame) -> bytes:
    """gRPC's serializer of exchange frames: encoded chunks as they are."""
    return frame.wire if isinstance(frame, EncodedChunk) else frame.SerializeToString()


class _Fallback(Exception):
    """Not in protobuf's own layout: let protobuf parse it."""


def _varint(data: bytes, pos: int, end: int, limit: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= limit:
                raise _Fallback
            return value, pos
        shift += 7
    raise _Fallback


def _chunk_frame(data: bytes) -> ChunkFrame:
    end = len(data)
    pos, round_ = 0, 0
    if pos < end and data[pos] == _ROUND:
        round_, pos = _varint(data, pos + 1, end, _UINT64)
    if pos >= end or data[pos] != _CHUNK:
        raise _Fallback
    size, pos = _varint(data, pos + 1, end, _UINT64)
    if pos + size != end:
        raise _Fallback  # anything after the chunk: another field, or a second chunk
    values = [0, 0, 0]
    for slot, tag in enumerate(_CHUNK_FIELDS):
        if pos < end and data[pos] == tag:
            values[slot], pos = _varint(data, pos + 1, end, _UINT32)
    view = memoryview(data)[pos:pos]
    if pos < end:
        if data[pos] != _DATA:
            raise _Fallback
        size, pos = _varint(data, pos + 1, end, _UINT64)
        if pos + size != end:
            raise _Fallback
        view = memoryview(data)[pos:end]
    return ChunkFrame(round_, values[0], values[1], values[2], view.toreadonly())


def parse_frame(data: bytes) -> exchange_pb2.Frame | ChunkFrame:
    """gRPC's deserializer of exchange frames: a ChunkFrame for a chunk in protobuf's own
    layout, a parsed Frame for anything else (a malformed frame fails there, as before)."""
    try:
        return _chunk_frame(data)
    except _Fallback:
        return exchange_pb2.Frame.FromString(data)


EXCHANGE_METHOD = "/solora.v1.Solora/Exchange"


def exchange_handler(
    behaviour: Callable[..., Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """The server's Exchange method reading frames with `parse_frame`."""
    return grpc.stream_stream_rpc_method_handler(
        behaviour,
        request_deserializer=parse_frame,
        response_serializer=serialize_frame,
    )


def exchange_call(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamMultiCallable:
    """The client's Exchange method reading frames with `parse_frame`."""
    return channel.stream_stream(
        EXCHANGE_METHOD,
        request_serializer=serialize_frame,
        response_deserializer=parse_frame,
    )


def as_chunk(frame: exchange_pb2.Frame | ChunkFrame) -> ChunkFrame | None:
    """The frame's chunk, however it was parsed; None for any other frame."""
    if isinstance(frame, ChunkFrame):
        return frame
    if frame.WhichOneof("body") != "chunk":
        return None
    c = frame.chunk
    return ChunkFrame(frame.round, c.item_id, c.index, c.total, memoryview(c.data))
