"""net/frames.py reads chunk frames as views, and agrees with protobuf on every frame."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from solora_node._proto import exchange_pb2
from solora_node.net.frames import ChunkFrame, EncodedChunk, as_chunk, parse_frame, serialize_frame


def _chunk_frame(round_: int, item_id: int, index: int, total: int, data: bytes) -> bytes:
    frame = exchange_pb2.Frame(round=round_)
    chunk = frame.chunk
    chunk.item_id, chunk.index, chunk.total, chunk.data = item_id, index, total, data
    return frame.SerializeToString()


def _fields(frame: exchange_pb2.Frame | ChunkFrame) -> tuple[int, int, int, int, bytes]:
    chunk = as_chunk(frame)
    assert chunk is not None
    return chunk.round, chunk.item_id, chunk.index, chunk.total, bytes(chunk.data)


u32 = st.integers(0, (1 << 32) - 1)


@given(st.integers(0, (1 << 64) - 1), u32, u32, u32, st.binary(max_size=300))
def test_chunk_frames_read_as_views_agree_with_protobuf(
    round_: int, item_id: int, index: int, total: int, data: bytes
) -> None:
    wire = _chunk_frame(round_, item_id, index, total, data)
    fast = parse_frame(wire)
    assert isinstance(fast, ChunkFrame) and fast.data.readonly
    assert _fields(fast) == _fields(exchange_pb2.Frame.FromString(wire))


def test_the_data_is_not_copied() -> None:
    wire = _chunk_frame(3, 1, 0, 1, b"x" * 1000)
    fast = parse_frame(wire)
    assert isinstance(fast, ChunkFrame) and fast.data.obj is wire


@pytest.mark.parametrize(
    "wire",
    [
        # Fields out of number order, a repeated field, an unknown field, trailing bytes:
        # all valid protobuf, all left to protobuf.
        bytes([0x32, 4, 0x10, 2, 0x08, 1]) + bytes([0x08, 5]),
        bytes([0x32, 4, 0x08, 1, 0x08, 2]),
        bytes([0x32, 4, 0x08, 1, 0x78, 1]),
        _chunk_frame(1, 2, 3, 4, b"abc") + bytes([0x08, 9]),
        bytes([0x32, 6, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F]),  # item_id over 32 bits
    ],
)
def test_other_layouts_are_parsed_by_protobuf(wire: bytes) -> None:
    assert _fields(parse_frame(wire)) == _fields(exchange_pb2.Frame.FromString(wire))


def test_other_frames_and_garbage_behave_as_before() -> None:
    ack = exchange_pb2.Frame(round=2, ack=exchange_pb2.Ack(item_id=4))
    parsed = parse_frame(ack.SerializeToString())
    assert isinstance(parsed, exchange_pb2.Frame) and parsed == ack and as_chunk(parsed) is None
    for garbage in (bytes([0x32, 10, 0x08]), bytes([0x32, 3, 0x22, 9, 1])):
        with pytest.raises(DecodeError):
            parse_frame(garbage)


@given(st.integers(0, (1 << 64) - 1), u32, u32, u32, st.binary(max_size=300), st.integers(1, 7))
def test_encoded_chunks_are_what_protobuf_serialises(
    round_: int, item_id: int, index: int, total: int, data: bytes, cut: int
) -> None:
    views = [memoryview(data)[i : i + cut] for i in range(0, len(data), cut)]
    encoded = EncodedChunk.build(round_, item_id, index, total, views)
    assert serialize_frame(encoded) == _chunk_frame(round_, item_id, index, total, data)
