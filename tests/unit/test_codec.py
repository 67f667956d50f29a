"""Codec and chunking: exact round trips, strict decoding, bounded reassembly."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solora_node.net.chunks import Reassembler, chunk_count, split
from solora_node.net.codec import (
    MAGIC,
    as_array,
    checksum,
    decode_delta,
    decode_item,
    decode_mask,
    encode_delta,
    encode_mask,
    from_float32,
    to_float32,
)
from solora_node.net.validate import check_checksum
from solora_node.protocol.blocks import WIRE_DTYPES, BlockDelta, BlockVersion, MaskRecord, RawTensor
from solora_node.protocol.reasons import Reason, WireError
from solora_node.testing.workload import default_round_layout, random_mask, synthetic_delta

VALUE_DTYPES = ["float32", "bfloat16", "float16", "int8"]


def _delta(encoding: str = "float16") -> BlockDelta:
    mask = random_mask("arithmetic", {"l0": (32, 8), "l1": (16, 8)}, 0.25, seed=3)
    return synthetic_delta(
        mask, round_=7, origin="node-a", encoding=encoding, seed=1, codes={"l0": (12,)}
    )


@pytest.mark.parametrize("encoding", VALUE_DTYPES)
def test_delta_round_trip_is_exact(encoding: str) -> None:
    delta = _delta(encoding)
    assert decode_delta(encode_delta(delta)) == delta


def test_mask_round_trip_is_exact() -> None:
    mask = random_mask("topic", default_round_layout(layers=2), 0.1, seed=5)
    data = encode_mask(mask)
    assert decode_mask(data) == mask
    assert isinstance(decode_item(data), MaskRecord)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1000, 1 << 20])
def test_decoding_the_chunks_equals_decoding_the_joined_item(chunk_bytes: int) -> None:
    # Chunk borders fall in the prefix, the header and across tensors alike.
    data = encode_delta(_delta())
    chunks = [bytes(c) for c in split(data, chunk_bytes)]
    assert decode_delta(chunks) == decode_delta(data)
    check_checksum(chunks, checksum(data))
    mask = random_mask("topic", {"l0": (8, 8)}, 0.5, seed=1)
    assert decode_mask([bytes(c) for c in split(encode_mask(mask), chunk_bytes)]) == mask


def test_defects_in_chunks_are_refused_like_defects_in_a_whole_item() -> None:
    data = encode_delta(_delta())
    for defective in (data[:-3], data + b"x", b"XXXX" + data[4:]):
        whole = _reason_of(lambda d=defective: decode_delta(d))
        chunked = _reason_of(lambda d=defective: decode_delta([d[:50], d[50:51], d[51:]]))
        assert whole is chunked is not None
    with pytest.raises(WireError) as err:
        check_checksum([data[:10], data[10:]], checksum(data[:-1]))
    assert err.value.reason is Reason.CHECKSUM_MISMATCH


def _reason_of(decode: Callable[[], object]) -> Reason | None:
    try:
        decode()
    except WireError as err:
        return err.reason
    return None


def test_kind_confusion_is_malformed() -> None:
    mask = random_mask("topic", {"l0": (8, 8)}, 0.5, seed=1)
    with pytest.raises(WireError) as err:
        decode_delta(encode_mask(mask))
    assert err.value.reason is Reason.MALFORMED
    with pytest.raises(WireError):
        decode_mask(encode_delta(_delta()))


def test_bfloat16_and_int8_views() -> None:
    values = np.array([1.0, -2.5, 0.0, 3.140625], dtype=np.float32)
    bf16 = from_float32(values, "bfloat16")
    assert as_array(bf16).dtype == np.uint16
    np.testing.assert_array_equal(to_float32(bf16), values)  # exactly representable
    q = from_float32(values, "int8")
    np.testing.assert_allclose(to_float32(q), values, atol=q.scale / 2 + 1e-7)
    assert from_float32(np.array([np.nan], np.float32), "bfloat16").data == struct.pack(
        "<H", 0x7FC0
    )


def test_encoded_layout_is_magic_header_then_raw_little_endian_buffers() -> None:
    delta = _delta("float32")
    data = encode_delta(delta)
    assert data[:4] == MAGIC
    (head_len,) = struct.unpack_from("<I", data, 4)
    body = data[8 + head_len :]
    expected = b"".join(t.data for t in delta.layers.values()) + b"".join(
        t.data for t in delta.codes.values()
    )
    assert body == expected


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[:5], Reason.MALFORMED),  # shorter than the prefix
        (lambda d: b"XXXX" + d[4:], Reason.MALFORMED),  # bad magic
        (lambda d: d[:4] + struct.pack("<I", 1 << 30) + d[8:], Reason.MALFORMED),  # header length
        (lambda d: d[:-1], Reason.TRUNCATED),  # last tensor cut short
        (lambda d: d + b"\0", Reason.MALFORMED),  # trailing bytes
        (lambda d: d[:8] + b"\xff" * (len(d) - 8), Reason.MALFORMED),  # garbage header
    ],
)
def test_defective_bytes_raise_wire_error(mutate, reason: Reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WireError) as err:
        decode_item(mutate(encode_delta(_delta())))
    assert err.value.reason is reason


def test_encoder_refuses_inconsistent_tensor() -> None:
    bad = RawTensor(dtype="float16", shape=(3,), data=b"\0\0")
    delta = BlockDelta(BlockVersion("t", 0, "a"), "m", "float16", {"l": bad})
    with pytest.raises(ValueError, match="needs 6"):
        encode_delta(delta)


# ---------------------------------------------------------------- chunks


def _assemble(data: bytes, chunk_bytes: int = 10, max_bytes: int = 1000) -> Reassembler:
    return Reassembler(len(data), max_bytes=max_bytes, max_chunk_bytes=chunk_bytes)


def test_split_and_reassemble() -> None:
    data = bytes(range(95))
    parts = split(data, 10)
    assert len(parts) == chunk_count(len(data), 10) == 10
    r = _assemble(data)
    done = [r.add(i, len(parts), bytes(p)) for i, p in enumerate(parts)]
    assert done == [False] * 9 + [True]
    assert r.result() == data


def test_empty_item_is_one_empty_chunk() -> None:
    r = _assemble(b"")
    assert r.add(0, 1, b"")
    assert r.result() == b""


@pytest.mark.parametrize(
    "chunks, reason",
    [
        ([(0, 2, b"a" * 10), (0, 2, b"a" * 10)], Reason.BAD_CHUNK),  # duplicate
        ([(1, 2, b"a" * 10)], Reason.BAD_CHUNK),  # gap
        ([(0, 2, b"a" * 10), (2, 2, b"a" * 10)], Reason.BAD_CHUNK),  # index out of range
        ([(0, 2, b"a" * 10), (1, 3, b"a" * 10)], Reason.BAD_CHUNK),  # total changed
        ([(0, 99, b"a" * 10)], Reason.BAD_CHUNK),  # more chunks than bytes
        ([(0, 2, b"a" * 11)], Reason.TOO_LARGE),  # chunk above limit
        ([(0, 2, b"a" * 10), (1, 2, b"a" * 9)], Reason.TRUNCATED),  # short of the declared size
    ],
)
def test_reassembly_bounds(chunks: list[tuple[int, int, bytes]], reason: Reason) -> None:
    r = _assemble(b"a" * 20)
    with pytest.raises(WireError) as err:
        for index, total, data in chunks:
            r.add(index, total, data)
    assert err.value.reason is reason


def test_checksum_of_the_whole_item() -> None:
    r = _assemble(b"a" * 20)
    r.add(0, 2, b"a" * 10)
    assert r.add(1, 2, b"b" * 10)
    check_checksum(r.result(), checksum(b"a" * 10 + b"b" * 10))
    with pytest.raises(WireError) as err:
        check_checksum(r.result(), checksum(b"a" * 20))
    assert err.value.reason is Reason.CHECKSUM_MISMATCH


def test_declared_size_above_limit_is_refused_before_any_byte() -> None:
    with pytest.raises(WireError) as err:
        Reassembler(2000, max_bytes=1000, max_chunk_bytes=10)
    assert err.value.reason is Reason.TOO_LARGE


def test_more_bytes_than_declared_is_refused() -> None:
    r = Reassembler(5, max_bytes=100, max_chunk_bytes=10)
    with pytest.raises(WireError) as err:
        r.add(0, 1, b"aaaaaa")
    assert err.value.reason is Reason.TOO_LARGE


# ---------------------------------------------------------------- properties

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._0123456789", min_size=1, max_size=20)
_shapes = st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=3).map(tuple)


@st.composite
def _raw_tensors(draw: st.DrawFn, dtypes: list[str]) -> RawTensor:
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(_shapes)
    numel = int(np.prod(shape)) if shape else 1
    data = draw(st.binary(min_size=numel * WIRE_DTYPES[dtype], max_size=numel * WIRE_DTYPES[dtype]))
    scale = draw(st.floats(allow_nan=True, allow_infinity=True)) if dtype == "int8" else 1.0
    return RawTensor(dtype=dtype, shape=shape, data=data, scale=scale)


@st.composite
def _deltas(draw: st.DrawFn) -> BlockDelta:
    encoding = draw(st.sampled_from(VALUE_DTYPES))
    layers = draw(st.dictionaries(_names, _raw_tensors([encoding]), max_size=4))
    codes = draw(
        st.dictionaries(_names, _raw_tensors(["float32", "float16", "bfloat16"]), max_size=2)
    )
    version = BlockVersion(
        task=draw(_names), round=draw(st.integers(0, 2**64 - 1)), origin=draw(_names)
    )
    return BlockDelta(
        version=version, mask_id=draw(_names), encoding=encoding, layers=layers, codes=codes
    )


def _same_bits(a: BlockDelta, b: BlockDelta) -> bool:
    # Compare bytes and scale bits: NaN scales (decodable, refused by validation) must match.
    def flat(d: BlockDelta) -> list[object]:
        out: list[object] = [d.version, d.mask_id, d.encoding]
        for group in (d.layers, d.codes):
            out += [
                (k, t.dtype, t.shape, t.data, struct.pack("<d", t.scale)) for k, t in group.items()
            ]
        return out

    return flat(a) == flat(b)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_deltas())
def test_property_delta_round_trip(delta: BlockDelta) -> None:
    assert _same_bits(decode_delta(encode_delta(delta)), delta)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_property_arbitrary_bytes_only_raise_wire_error(data: bytes) -> None:
    for candidate in (data, MAGIC + struct.pack("<I", max(0, len(data) - 4)) + data):
        with contextlib.suppress(WireError):  # anything else fails the test
            decode_item(candidate)


@settings(max_examples=100, deadline=None)
@given(_deltas(), st.data())
def test_property_mutated_encodings_only_raise_wire_error(
    delta: BlockDelta, data: st.DataObject
) -> None:
    encoded = bytearray(encode_delta(delta))
    for _ in range(data.draw(st.integers(1, 4))):
        if not encoded:
            break
        pos = data.draw(st.integers(0, len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    with contextlib.suppress(WireError):  # anything else fails the test
        decode_item(bytes(encoded[:cut]))


@pytest.mark.parametrize(
    ("round_", "item_id", "index", "total", "nbytes"),
    [(0, 0, 0, 1, 0), (3, 1, 2, 4, 1 << 20), (1 << 40, 300, 127, 128, 127), (5, 0, 0, 1, 200)],
)
def test_chunk_frame_size_is_what_protobuf_serialises(
    round_: int, item_id: int, index: int, total: int, nbytes: int
) -> None:
    from solora_node._proto import exchange_pb2
    from solora_node.net.chunks import chunk_frame_size

    frame = exchange_pb2.Frame(round=round_)
    frame.chunk.item_id, frame.chunk.index, frame.chunk.total = item_id, index, total
    frame.chunk.data = bytes(nbytes)
    assert chunk_frame_size(round_, item_id, index, total, nbytes) == frame.ByteSize()


@pytest.mark.parametrize("chunk", [1, 7, 10, 64, 1000])
def test_split_parts_cuts_the_concatenation_like_split(chunk: int) -> None:
    from solora_node.net.chunks import split_parts

    rng = np.random.default_rng(chunk)
    parts = [rng.bytes(int(n)) for n in rng.integers(0, 40, size=9)]
    whole = b"".join(parts)
    assert list(split_parts(parts, chunk)) == [bytes(c) for c in split(whole, chunk)]
    assert list(split_parts([b"", b""], chunk)) == [b""]  # an empty item is one empty chunk


def test_parts_encode_to_the_same_bytes_and_checksum() -> None:
    from solora_node.net.codec import checksum_parts, encode_delta_parts, encode_mask_parts

    delta, mask = _delta(), random_mask("topic", default_round_layout(layers=2), 0.1, seed=5)
    assert b"".join(encode_delta_parts(delta)) == encode_delta(delta)
    assert checksum_parts(encode_delta_parts(delta)) == checksum(encode_delta(delta))
    assert b"".join(encode_mask_parts(mask)) == encode_mask(mask)
