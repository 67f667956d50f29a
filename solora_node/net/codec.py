"""BlockDelta / MaskRecord <-> bytes, and numpy views of raw tensors.

Encoded item: b"SLP1" | header length (u32 LE) | PayloadHeader (protobuf) | buffers.
The header names each tensor's dtype, shape, scale and byte range; the buffers
are the tensors' little-endian bytes back to back. Decoding is strict (ranges
contiguous, sizes consistent, no trailing bytes) and turns every problem with
untrusted bytes into a WireError; nothing received is ever executed.
"""

from __future__ import annotations

import bisect
import itertools
import math
import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import xxhash

from solora_node._proto import common_pb2, payload_pb2
from solora_node.net.limits import MAX_DIMS, MAX_HEADER_BYTES, MAX_NAME_CHARS, MAX_TENSORS
from solora_node.protocol.blocks import WIRE_DTYPES, BlockDelta, BlockVersion, MaskRecord, RawTensor
from solora_node.protocol.reasons import Reason, WireError

MAGIC = b"SLP1"
_PREFIX = struct.Struct("<4sI")

# Wire dtype name -> (proto enum, numpy dtype used to view its bytes).
# bfloat16 has no numpy dtype: we view its 16-bit patterns as uint16.
_DTYPES: dict[str, tuple[common_pb2.Dtype, np.dtype]] = {
    "float32": (common_pb2.FLOAT32, np.dtype("<f4")),
    "bfloat16": (common_pb2.BFLOAT16, np.dtype("<u2")),
    "float16": (common_pb2.FLOAT16, np.dtype("<f2")),
    "int8": (common_pb2.INT8, np.dtype("i1")),
    "uint8": (common_pb2.UINT8, np.dtype("u1")),
}
_DTYPE_OF_PROTO: dict[int, str] = {int(number): name for name, (number, _) in _DTYPES.items()}
VALUE_ENCODINGS = frozenset({"float32", "bfloat16", "float16", "int8"})
FLOAT_DTYPES = frozenset({"float32", "bfloat16", "float16"})

assert set(_DTYPES) == set(WIRE_DTYPES), "codec and payload disagree on wire dtypes"


def dtype_to_proto(name: str) -> common_pb2.Dtype:
    try:
        return _DTYPES[name][0]
    except KeyError:
        raise ValueError(
            f"unknown wire dtype {name!r}; expected one of {sorted(_DTYPES)}"
        ) from None


def dtype_from_proto(number: int) -> str:
    try:
        return _DTYPE_OF_PROTO[number]
    except KeyError:
        raise WireError(Reason.WRONG_DTYPE, f"unknown dtype code {number}") from None


# The wire checksum, one choice for the whole protocol (docs/protocol.md, "Integrity"):
# XXH3-128 keeps up with memory, where SHA-256 ran at a twentieth of memcpy. It guards
# against corruption in chunking and reassembly, not against a hostile peer: the offerer
# supplies the digest itself, so no hash could, and TLS already authenticates the bytes.
# Changing it changes the protocol (PROTOCOL_VERSION). Checkpoints on disk keep SHA-256.
WIRE_CHECKSUM = "xxh3-128"
CHECKSUM_BYTES = 16


def checksum(data: bytes | bytearray | memoryview) -> bytes:
    """The wire checksum (WIRE_CHECKSUM) of an encoded item: CHECKSUM_BYTES bytes."""
    return checksum_parts((data,))


def checksum_parts(parts: Iterable[bytes | bytearray | memoryview]) -> bytes:
    """The checksum of the parts' concatenation, without concatenating them."""
    digest = xxhash.xxh3_128()
    for part in parts:
        digest.update(part)
    return digest.digest()


# ---------------------------------------------------------------- numpy views


def as_array(tensor: RawTensor) -> np.ndarray:
    """A read-only numpy view of the raw bytes (bfloat16 as uint16 bit patterns)."""
    dtype = _DTYPES[tensor.dtype][1]
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tensor.shape)


def to_float32(tensor: RawTensor) -> np.ndarray:
    """The real values as float32 (bfloat16 widened, int8 dequantised by its scale)."""
    raw = as_array(tensor)
    if tensor.dtype == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if tensor.dtype == "int8":
        return raw.astype(np.float32) * np.float32(tensor.scale)
    return raw.astype(np.float32, copy=False)


def from_float32(values: np.ndarray, dtype: str) -> RawTensor:
    """Encode float values as a RawTensor (bfloat16 rounded to nearest even, int8 symmetric)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    scale = 1.0
    if dtype == "bfloat16":
        bits = values.view(np.uint32)
        rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
        raw: np.ndarray = ((bits + rounding) >> 16).astype("<u2")
        # NaN must stay NaN (rounding could carry it into Inf).
        raw[np.isnan(values)] = 0x7FC0
    elif dtype == "int8":
        peak = float(np.max(np.abs(values))) if values.size else 0.0
        scale = peak / 127.0 if peak > 0 and math.isfinite(peak) else 1.0
        raw = np.clip(np.rint(values / scale), -127, 127).astype("i1")
    else:
        raw = values.astype(_DTYPES[dtype][1])
    return RawTensor(dtype=dtype, shape=tuple(values.shape), data=raw.tobytes(), scale=scale)


# ---------------------------------------------------------------- encode


def _fill_table(
    table: payload_pb2.TensorTable,
    tensors: Mapping[str, RawTensor],
    dense: Mapping[str, tuple[int, int]] | None = None,
) -> None:
    for name, tensor in tensors.items():
        if tensor.numel * WIRE_DTYPES[tensor.dtype] != len(tensor.data):
            raise ValueError(
                f"tensor {name!r}: {len(tensor.data)} bytes but shape {tensor.shape} of "
                f"{tensor.dtype} needs {tensor.numel * WIRE_DTYPES[tensor.dtype]}"
            )
    # Whole columns at once: one C-level extend per column instead of a message per tensor.
    table.name.extend(tensors)
    table.dtype.extend([_DTYPES[t.dtype][0] for t in tensors.values()])
    table.ndim.extend([len(t.shape) for t in tensors.values()])
    table.dims.extend([d for t in tensors.values() for d in t.shape])
    table.scale.extend([t.scale for t in tensors.values()])
    table.length.extend([len(t.data) for t in tensors.values()])
    if dense is not None:
        table.dense_dims.extend([d for name in tensors for d in dense[name]])


def _assemble(header: payload_pb2.PayloadHeader, buffers: Iterable[bytes]) -> list[bytes]:
    head = header.SerializeToString()
    return [_PREFIX.pack(MAGIC, len(head)) + head, *buffers]


def encode_delta(delta: BlockDelta) -> bytes:
    """Encode a task block; raises ValueError for an inconsistent (locally built) delta."""
    return b"".join(encode_delta_parts(delta))


def encode_mask(mask: MaskRecord) -> bytes:
    return b"".join(encode_mask_parts(mask))


def encode_delta_parts(delta: BlockDelta) -> list[bytes]:
    """The encoded delta as parts whose concatenation is encode_delta's bytes: the tensors'
    own buffers, uncopied (the wire path chunks and hashes them without joining)."""
    if delta.encoding not in VALUE_ENCODINGS:
        raise ValueError(
            f"delta encoding {delta.encoding!r} must be one of {sorted(VALUE_ENCODINGS)}"
        )
    header = payload_pb2.PayloadHeader(
        kind=payload_pb2.DELTA, encoding=dtype_to_proto(delta.encoding)
    )
    version = header.version
    version.task = delta.version.task
    version.round = delta.version.round
    version.origin = delta.version.origin
    version.incarnation = delta.version.incarnation
    version.mask_id = delta.mask_id
    _fill_table(header.layers, delta.layers)
    _fill_table(header.codes, delta.codes)
    buffers = [t.data for t in delta.layers.values()] + [t.data for t in delta.codes.values()]
    return _assemble(header, buffers)


def encode_mask_parts(mask: MaskRecord) -> list[bytes]:
    missing = set(mask.layers) - set(mask.shapes)
    if missing:
        raise ValueError(f"mask {mask.mask_id!r}: no dense shape for layers {sorted(missing)}")
    header = payload_pb2.PayloadHeader(kind=payload_pb2.MASK)
    header.version.task = mask.task
    header.version.mask_id = mask.mask_id
    _fill_table(header.layers, mask.layers, dense=mask.shapes)
    return _assemble(header, [t.data for t in mask.layers.values()])


# ---------------------------------------------------------------- decode


def encoded_size(delta: BlockDelta, mask: MaskRecord | None = None) -> int:
    """Bytes one message takes on the wire: a delta, plus a mask record when one rides along.

    The one byte count of the project: `bench payload`, `sim` and the demo all use it.
    """
    return len(encode_delta(delta)) + (len(encode_mask(mask)) if mask is not None else 0)


def _malformed(detail: str) -> WireError:
    return WireError(Reason.MALFORMED, detail)


Buffer = bytes | bytearray | memoryview


class _Item:
    """An encoded item as one buffer or as the chunks it arrived in (net/chunks.py).

    Decoding copies each tensor's bytes out once, from whichever chunks hold them: the
    received item is never joined into one buffer first (a copy of every byte).
    """

    def __init__(self, data: Buffer | Sequence[Buffer]) -> None:
        parts = [data] if isinstance(data, bytes | bytearray | memoryview) else data
        self._views = [memoryview(part) for part in parts if len(part)]
        self._starts = list(itertools.accumulate(map(len, self._views), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def take(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the item (within its length): one copy."""
        if end <= start:
            return b""
        index = bisect.bisect_right(self._starts, start) - 1
        pieces = []
        while start < end:
            base = self._starts[index]
            stop = min(end, base + len(self._views[index]))
            pieces.append(self._views[index][start - base : stop - base])
            start, index = stop, index + 1
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)


def _parse_header(item: _Item) -> tuple[payload_pb2.PayloadHeader, int]:
    """The header, and the offset where the tensors' buffers begin."""
    if len(item) < _PREFIX.size:
        raise _malformed(f"{len(item)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, head_len = _PREFIX.unpack(item.take(0, _PREFIX.size))
    if magic != MAGIC:
        raise _malformed(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if head_len > MAX_HEADER_BYTES or _PREFIX.size + head_len > len(item):
        raise _malformed(f"header length {head_len} exceeds the item ({len(item)} bytes) or limit")
    header = payload_pb2.PayloadHeader()
    try:
        header.ParseFromString(item.take(_PREFIX.size, _PREFIX.size + head_len))
    except Exception as exc:  # untrusted bytes: any parser complaint is "malformed"
        raise _malformed(f"header does not parse: {type(exc).__name__}") from None
    return header, _PREFIX.size + head_len


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS:
        raise _malformed(f"{what} name must have 1..{MAX_NAME_CHARS} characters")


def _read_table(
    table: payload_pb2.TensorTable, item: _Item, offset: int
) -> tuple[dict[str, RawTensor], int]:
    """Tensors of one table, reading buffers from `offset`; returns them and the end offset."""
    names = list(table.name)
    count = len(names)
    dtypes, ndims, scales, lengths = (
        list(table.dtype),
        list(table.ndim),
        list(table.scale),
        list(table.length),
    )
    if not len(dtypes) == len(ndims) == len(scales) == len(lengths) == count:
        raise _malformed("tensor table columns have different lengths")
    if count > MAX_TENSORS or any(n > MAX_DIMS for n in ndims):
        raise _malformed(f"more than {MAX_TENSORS} tensors or {MAX_DIMS} dims")
    dims = list(table.dims)
    if len(dims) != sum(ndims):
        raise _malformed(f"{len(dims)} dims listed for shapes of {sum(ndims)} dims")
    tensors: dict[str, RawTensor] = {}
    at = 0
    for name, code, ndim, scale, length in zip(names, dtypes, ndims, scales, lengths, strict=True):
        _check_name(name, "tensor")
        if name in tensors:
            raise _malformed(f"tensor {name!r} appears twice")
        dtype = dtype_from_proto(code)
        shape = tuple(dims[at : at + ndim])
        at += ndim
        if math.prod(shape) * WIRE_DTYPES[dtype] != length:
            raise _malformed(f"tensor {name!r}: {length} bytes do not hold {shape} x {dtype}")
        end = offset + length
        if end > len(item):
            raise WireError(Reason.TRUNCATED, f"tensor {name!r} runs past the end of the item")
        tensors[name] = RawTensor(
            dtype=dtype, shape=shape, data=item.take(offset, end), scale=scale
        )
        offset = end
    return tensors, offset


def _finish(item: _Item, end: int) -> None:
    if end != len(item):
        raise _malformed(f"{len(item) - end} bytes after the last tensor")


def _delta_from(header: payload_pb2.PayloadHeader, item: _Item, start: int) -> BlockDelta:
    v = header.version
    _check_name(v.task, "task")
    _check_name(v.origin, "origin")
    _check_name(v.mask_id, "mask_id")
    encoding = dtype_from_proto(header.encoding)
    if encoding not in VALUE_ENCODINGS:
        raise WireError(Reason.WRONG_DTYPE, f"encoding {encoding} cannot carry block values")
    if header.layers.dense_dims or header.codes.dense_dims:
        raise _malformed("dense_dims are only valid in a mask")
    layers, end = _read_table(header.layers, item, start)
    codes, end = _read_table(header.codes, item, end)
    _finish(item, end)
    return BlockDelta(
        version=BlockVersion(
            task=v.task, round=v.round, origin=v.origin, incarnation=v.incarnation
        ),
        mask_id=v.mask_id,
        encoding=encoding,
        layers=layers,
        codes=codes,
    )


def _mask_from(header: payload_pb2.PayloadHeader, item: _Item, start: int) -> MaskRecord:
    v = header.version
    _check_name(v.task, "task")
    _check_name(v.mask_id, "mask_id")
    if header.codes.name:
        raise _malformed("a mask carries no codes")
    layers, end = _read_table(header.layers, item, start)
    _finish(item, end)
    dense = list(header.layers.dense_dims)
    if len(dense) != 2 * len(layers):
        raise _malformed("a mask needs a 2-d dense shape per layer")
    shapes = {name: (dense[2 * i], dense[2 * i + 1]) for i, name in enumerate(layers)}
    return MaskRecord(task=v.task, mask_id=v.mask_id, layers=layers, shapes=shapes)


def decode_item(data: Buffer | Sequence[Buffer]) -> BlockDelta | MaskRecord:
    """Decode an encoded delta or mask, given whole or as the chunks it arrived in (their
    concatenation is the item); any defect raises WireError, nothing else escapes."""
    item = _Item(data)
    header, start = _parse_header(item)
    if header.kind == payload_pb2.DELTA:
        return _delta_from(header, item, start)
    if header.kind == payload_pb2.MASK:
        return _mask_from(header, item, start)
    raise _malformed(f"unknown payload kind {header.kind}")


def decode_delta(data: Buffer | Sequence[Buffer]) -> BlockDelta:
    item = decode_item(data)
    if not isinstance(item, BlockDelta):
        raise _malformed("expected a delta, got a mask")
    return item


def decode_mask(data: Buffer | Sequence[Buffer]) -> MaskRecord:
    item = decode_item(data)
    if not isinstance(item, MaskRecord):
        raise _malformed("expected a mask, got a delta")
    return item
