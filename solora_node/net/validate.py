"""Checks on everything received, before any of it reaches the store or the model.

Each check raises WireError with the reason a peer is told and a metric counts.
Order matters only for which reason is reported: cheap structural checks
first, numeric ones (finite, norm) last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from solora_node.net.codec import (
    CHECKSUM_BYTES,
    FLOAT_DTYPES,
    WIRE_CHECKSUM,
    Buffer,
    as_array,
    checksum_parts,
)
from solora_node.protocol.blocks import BlockDelta, MaskRecord, RawTensor
from solora_node.protocol.messages import Descriptor, Expectation
from solora_node.protocol.reasons import Reason, WireError


def check_offered(
    item: Descriptor, *, current_round: int, staleness_rounds: int, max_bytes: int
) -> None:
    """Refuse before transfer what could never be accepted: too big or too old."""
    if item.nbytes > max_bytes:
        raise WireError(Reason.TOO_LARGE, f"{item.nbytes} bytes offered, limit {max_bytes}")
    if len(item.checksum) != CHECKSUM_BYTES:
        raise WireError(
            Reason.MALFORMED, f"checksum must be {CHECKSUM_BYTES} bytes of {WIRE_CHECKSUM}"
        )
    if item.kind == "delta":
        check_round(item.round, current_round=current_round, staleness_rounds=staleness_rounds)


def check_checksum(data: Buffer | Sequence[Buffer], expected: bytes) -> None:
    """`data`: the item, whole or as the chunks it arrived in (hashed without joining)."""
    parts = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    if checksum_parts(parts) != expected:
        raise WireError(
            Reason.CHECKSUM_MISMATCH, f"{WIRE_CHECKSUM} of the reassembled item differs"
        )


def check_round(round_: int, *, current_round: int, staleness_rounds: int) -> None:
    if round_ + staleness_rounds < current_round:
        raise WireError(
            Reason.STALE_ROUND,
            f"round {round_} is older than {current_round} - {staleness_rounds}",
        )


def check_matches_offer(item: BlockDelta | MaskRecord, offered: Descriptor) -> None:
    """What arrived must be what was offered (and wanted): a bait-and-switch is malformed."""
    got: tuple[object, ...]
    want: tuple[object, ...]
    if isinstance(item, BlockDelta):
        got = (
            "delta",
            item.task,
            item.version.round,
            item.version.origin,
            item.mask_id,
            item.encoding,
        )
        want = (
            "delta",
            offered.task,
            offered.round,
            offered.origin,
            offered.mask_id,
            offered.encoding,
        )
    else:
        got = ("mask", item.task, item.mask_id)
        want = (offered.kind, offered.task, offered.mask_id)
    if got != want:
        raise WireError(Reason.MALFORMED, f"item is {got}, offered as {want}")


def _check_shapes(
    tensors: Mapping[str, RawTensor],
    expected: Mapping[str, tuple[int, ...]],
    what: str,
    *,
    all_required: bool,
) -> None:
    unknown = set(tensors) - set(expected)
    if unknown:
        raise WireError(Reason.WRONG_SHAPE, f"unexpected {what} {sorted(unknown)[:3]}")
    if all_required:
        missing = set(expected) - set(tensors)
        if missing:
            raise WireError(Reason.WRONG_SHAPE, f"missing {what} {sorted(missing)[:3]}")
    for name, tensor in tensors.items():
        if tensor.shape != tuple(expected[name]):
            raise WireError(
                Reason.WRONG_SHAPE,
                f"{what} {name!r} has shape {tensor.shape}, expected {expected[name]}",
            )


def _check_dtypes(delta: BlockDelta, expectation: Expectation) -> None:
    if delta.encoding not in expectation.encodings:
        raise WireError(
            Reason.WRONG_DTYPE, f"encoding {delta.encoding} not in {sorted(expectation.encodings)}"
        )
    for name, tensor in delta.layers.items():
        if tensor.dtype != delta.encoding:
            raise WireError(
                Reason.WRONG_DTYPE, f"layer {name!r} is {tensor.dtype}, block is {delta.encoding}"
            )
        if tensor.dtype == "int8" and not (math.isfinite(tensor.scale) and tensor.scale > 0):
            raise WireError(Reason.NOT_FINITE, f"layer {name!r} has scale {tensor.scale}")
    for name, tensor in delta.codes.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise WireError(
                Reason.WRONG_DTYPE, f"code {name!r} is {tensor.dtype}, expected a float type"
            )


# Values are widened to float32 this many at a time, into one cache-sized scratch buffer:
# checking a large fp16/bf16 block never makes a float32 copy of all of it.
SCAN_VALUES = 1 << 18


def _widen_into(part: np.ndarray, dtype: str, out: np.ndarray) -> np.ndarray:
    """`part` (raw wire values) as float32 in `out`; int8 stays unscaled (the caller scales)."""
    if dtype == "bfloat16":  # bf16 is the high half of a float32
        bits = out.view(np.uint32)
        np.left_shift(part, 16, out=bits, dtype=np.uint32)
        return out
    out[...] = part
    return out


# fp16 exponent 31 (Inf, NaN) once its magnitude bits sit in float32's place (<< 13).
_HALF_NOT_FINITE = 0x1F << 23
_HALF_MAGNITUDE = 0x7FFF << 13
_HALF_SCALE = np.float32(2.0**112)  # float32's exponent bias minus fp16's: 127 - 15


def _half_magnitudes_into(part: np.ndarray, out: np.ndarray) -> bool:
    """|values| of fp16 `part` as float32 in `out`, exactly, by bit arithmetic: numpy's
    fp16 cast ran at a fifth of this. The magnitude bits shifted into float32's place
    read as the value times 2^-112 (subnormals too), so one multiply rescales them. Inf
    and NaN would come out finite: False when there is any, and `out` is then garbage."""
    bits = out.view(np.uint32)
    np.left_shift(part.view(np.uint16), 13, out=bits, dtype=np.uint32)
    np.bitwise_and(bits, _HALF_MAGNITUDE, out=bits)
    if bits.size and int(bits.max()) >= _HALF_NOT_FINITE:
        return False
    np.multiply(out, _HALF_SCALE, out=out)
    return True


def _square_of(values: np.ndarray) -> float:
    """One BLAS pass: NaN or Inf anywhere makes the sum non-finite. A finite but huge
    float32 value can overflow the square too; the rare slow path tells them apart."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is an answer here
        square = float(np.dot(values, values))
    if not math.isfinite(square):
        return math.nan if not np.isfinite(values).all() else math.inf
    return square


def sum_of_squares(tensor: RawTensor) -> float:
    """Sum of the squared real values of one tensor; NaN if any is not finite, inf on overflow."""
    raw = as_array(tensor).reshape(-1)
    if tensor.dtype == "float32":  # nothing to widen: no copy at all
        return _square_of(raw)
    scratch = np.empty(min(raw.size, SCAN_VALUES), dtype=np.float32)
    total = 0.0
    for start in range(0, raw.size, SCAN_VALUES):
        piece = raw[start : start + SCAN_VALUES]
        values = scratch[: piece.size]
        if tensor.dtype == "float16":
            if not _half_magnitudes_into(piece, values):
                return math.nan
            square = _square_of(values)
        else:
            square = _square_of(_widen_into(piece, tensor.dtype, values))
        if not math.isfinite(square):
            return square
        total += square
    return total * float(tensor.scale) ** 2 if tensor.dtype == "int8" else total


def block_norm(delta: BlockDelta) -> float:
    """L2 norm of all values of the block (codes excluded), NaN if any value is not finite."""
    total = 0.0
    for tensor in delta.layers.values():
        square = sum_of_squares(tensor)
        if not math.isfinite(square):
            return square
        total += square
    return math.sqrt(total)


def validate_delta(
    delta: BlockDelta,
    offered: Descriptor,
    expectation: Expectation,
    *,
    current_round: int,
    staleness_rounds: int,
    norm_bound: float,
    max_bytes: int,
) -> float:
    """All checks on a decoded block; returns its L2 norm when it passes."""
    check_matches_offer(delta, offered)
    if delta.nbytes > max_bytes:
        raise WireError(Reason.TOO_LARGE, f"{delta.nbytes} bytes, limit {max_bytes}")
    check_round(delta.version.round, current_round=current_round, staleness_rounds=staleness_rounds)
    _check_shapes(delta.layers, expectation.layers, "layer", all_required=True)
    _check_shapes(delta.codes, expectation.codes, "code", all_required=False)
    _check_dtypes(delta, expectation)
    for name, tensor in delta.codes.items():
        if math.isnan(sum_of_squares(tensor)):
            raise WireError(Reason.NOT_FINITE, f"code {name!r} has NaN or Inf")
    norm = block_norm(delta)
    if math.isnan(norm):
        raise WireError(Reason.NOT_FINITE, "block values contain NaN or Inf")
    if not norm <= norm_bound:
        raise WireError(Reason.NORM_TOO_LARGE, f"L2 norm {norm:.4g} above bound {norm_bound:.4g}")
    return norm


def validate_mask(
    mask: MaskRecord, offered: Descriptor, dense_shapes: Mapping[str, tuple[int, int]]
) -> None:
    """A mask must cover exactly the task's layers, with one bit per B entry."""
    check_matches_offer(mask, offered)
    if dict(mask.shapes) != {k: tuple(v) for k, v in dense_shapes.items()}:
        raise WireError(
            Reason.WRONG_SHAPE, "mask layers or dense shapes differ from this task's block"
        )
    for name, tensor in mask.layers.items():
        if tensor.dtype != "uint8":
            raise WireError(
                Reason.WRONG_DTYPE, f"mask layer {name!r} is {tensor.dtype}, expected uint8"
            )
        rows, cols = mask.shapes[name]
        if tensor.nbytes != -(-rows * cols // 8):
            raise WireError(
                Reason.WRONG_SHAPE,
                f"mask layer {name!r}: {tensor.nbytes} bytes for {rows}x{cols} bits",
            )


def mask_counts(mask: MaskRecord) -> dict[str, int]:
    """Kept entries per layer: the number of values a block under this mask carries."""
    counts: dict[str, int] = {}
    for name, tensor in mask.layers.items():
        rows, cols = mask.shapes[name]
        bits = np.unpackbits(np.frombuffer(tensor.data, dtype=np.uint8), count=rows * cols)
        counts[name] = int(bits.sum())
    return counts


def expectation_from_mask(
    mask: MaskRecord,
    codes: Mapping[str, tuple[int, ...]] | None = None,
    encodings: frozenset[str] | None = None,
) -> Expectation:
    """The expectation for blocks laid out as 1-d value vectors under `mask`."""
    layers = {name: (count,) for name, count in mask_counts(mask).items()}
    if encodings is None:
        return Expectation(layers=layers, codes=dict(codes or {}))
    return Expectation(layers=layers, codes=dict(codes or {}), encodings=encodings)
