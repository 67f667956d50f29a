"""Validation of received blocks and masks: each defect has its own reason."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from solora_node.net.codec import (
    CHECKSUM_BYTES,
    checksum,
    encode_delta,
    encode_mask,
    from_float32,
    to_float32,
)
from solora_node.net.validate import (
    SCAN_VALUES,
    block_norm,
    check_offered,
    expectation_from_mask,
    mask_counts,
    sum_of_squares,
    validate_delta,
    validate_mask,
)
from solora_node.protocol.blocks import BlockDelta, BlockVersion, RawTensor
from solora_node.protocol.messages import Descriptor
from solora_node.protocol.reasons import Reason, WireError
from solora_node.testing.workload import random_mask, synthetic_delta

LAYOUT = {"l0": (32, 8), "l1": (16, 8)}
MASK = random_mask("arithmetic", LAYOUT, 0.25, seed=3)
EXPECT = expectation_from_mask(MASK, codes={"l0": (4,)})


def _descriptor(delta: BlockDelta) -> Descriptor:
    data = encode_delta(delta)
    v = delta.version
    return Descriptor(
        0,
        "delta",
        v.task,
        v.round,
        v.origin,
        delta.mask_id,
        delta.encoding,
        len(data),
        checksum(data),
    )


def _good(**kw: object) -> BlockDelta:
    return synthetic_delta(MASK, round_=5, origin="a", seed=1, **kw)  # type: ignore[arg-type]


def _check(delta: BlockDelta, offered: Descriptor | None = None, **kw: object) -> float:
    args: dict[str, object] = {
        "current_round": 5,
        "staleness_rounds": 2,
        "norm_bound": 10.0,
        "max_bytes": 1 << 20,
    }
    args.update(kw)
    return validate_delta(delta, offered or _descriptor(delta), EXPECT, **args)  # type: ignore[arg-type]


def _with_layer(delta: BlockDelta, name: str, tensor: RawTensor) -> BlockDelta:
    return dataclasses.replace(delta, layers={**delta.layers, name: tensor})


def test_mask_counts_match_density() -> None:
    assert mask_counts(MASK) == {"l0": 64, "l1": 32}
    assert EXPECT.layers == {"l0": (64,), "l1": (32,)}


def test_good_block_passes_and_reports_norm() -> None:
    delta = _good()
    assert _check(delta) == pytest.approx(block_norm(delta))


def _reason(fn, *args, **kw) -> Reason:  # type: ignore[no-untyped-def]
    with pytest.raises(WireError) as err:
        fn(*args, **kw)
    return err.value.reason


def test_wrong_shape_missing_and_extra_layers() -> None:
    delta = _good()
    short = from_float32(np.zeros(63, np.float32), "float16")
    assert _reason(_check, _with_layer(delta, "l0", short)) is Reason.WRONG_SHAPE
    assert (
        _reason(_check, dataclasses.replace(delta, layers={"l0": delta.layers["l0"]}))
        is Reason.WRONG_SHAPE
    )
    extra = _with_layer(delta, "l9", delta.layers["l1"])
    assert _reason(_check, extra) is Reason.WRONG_SHAPE


def test_wrong_dtype() -> None:
    delta = _good()
    as32 = from_float32(np.zeros(64, np.float32), "float32")
    assert _reason(_check, _with_layer(delta, "l0", as32)) is Reason.WRONG_DTYPE
    code16 = {"l0": RawTensor("int8", (4,), b"\0" * 4)}
    assert _reason(_check, dataclasses.replace(delta, codes=code16)) is Reason.WRONG_DTYPE


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_not_finite(bad: float) -> None:
    values = np.zeros(64, np.float32)
    values[3] = bad
    for encoding in ("float32", "float16", "bfloat16"):
        delta = _with_layer(_good(encoding=encoding), "l0", from_float32(values, encoding))
        assert _reason(_check, delta) is Reason.NOT_FINITE


@pytest.mark.parametrize("encoding", ["float32", "float16", "bfloat16", "int8"])
def test_sum_of_squares_matches_a_float64_reference_across_scan_pieces(encoding: str) -> None:
    rng = np.random.default_rng(7)
    values = rng.standard_normal(2 * SCAN_VALUES + 123).astype(np.float32)
    tensor = from_float32(values, encoding)
    reference = float(np.sum(to_float32(tensor).astype(np.float64) ** 2))
    assert sum_of_squares(tensor) == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("encoding", ["float16", "bfloat16"])
def test_not_finite_in_a_later_scan_piece_and_overflow_told_apart(encoding: str) -> None:
    values = np.zeros(3 * SCAN_VALUES, np.float32)
    values[2 * SCAN_VALUES + 5] = math.nan
    assert math.isnan(sum_of_squares(from_float32(values, encoding)))
    huge = np.full(SCAN_VALUES, 6e4 if encoding == "float16" else 3e38, np.float32)
    square = sum_of_squares(from_float32(huge, encoding))
    assert math.isinf(square) or square > 1e14  # finite values: never NaN


def test_validation_never_widens_a_whole_fp16_block() -> None:
    import tracemalloc

    values = np.random.default_rng(1).standard_normal(1 << 20).astype(np.float32)
    tensor = from_float32(values, "float16")
    tracemalloc.start()
    sum_of_squares(tensor)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * SCAN_VALUES + (64 << 10)  # one float32 scratch piece, not 4 MiB


def test_checksum_is_the_one_wire_choice_and_offers_must_carry_it() -> None:
    delta = _good()
    assert len(checksum(encode_delta(delta))) == CHECKSUM_BYTES
    offered = dataclasses.replace(_descriptor(delta), checksum=b"\0" * 32)  # an old sha256
    with pytest.raises(WireError) as err:
        check_offered(offered, current_round=5, staleness_rounds=2, max_bytes=1 << 20)
    assert err.value.reason is Reason.MALFORMED


def test_int8_scale_must_be_positive_and_finite() -> None:
    delta = _good(encoding="int8")
    broken = dataclasses.replace(delta.layers["l0"], scale=math.nan)
    assert _reason(_check, _with_layer(delta, "l0", broken)) is Reason.NOT_FINITE


def test_norm_bound() -> None:
    delta = _with_layer(_good(), "l0", from_float32(np.full(64, 2.0, np.float32), "float16"))
    assert block_norm(delta) > 10.0
    assert _reason(_check, delta) is Reason.NORM_TOO_LARGE
    assert _check(delta, norm_bound=100.0) > 10.0


def test_stale_round_and_size() -> None:
    delta = _good()
    assert _reason(_check, delta, current_round=8) is Reason.STALE_ROUND
    assert _check(delta, current_round=7) > 0  # exactly k rounds old is still fresh
    assert _reason(_check, delta, max_bytes=10) is Reason.TOO_LARGE
    offered = _descriptor(delta)
    assert (
        _reason(check_offered, offered, current_round=9, staleness_rounds=2, max_bytes=1 << 20)
        is Reason.STALE_ROUND
    )
    assert (
        _reason(check_offered, offered, current_round=0, staleness_rounds=2, max_bytes=10)
        is Reason.TOO_LARGE
    )


def test_bait_and_switch_is_malformed() -> None:
    delta = _good()
    other = dataclasses.replace(delta, version=BlockVersion("arithmetic", 5, "someone-else"))
    assert _reason(_check, other, _descriptor(delta)) is Reason.MALFORMED


def test_mask_validation() -> None:
    data = encode_mask(MASK)
    offered = Descriptor(
        0, "mask", "arithmetic", 0, "", MASK.mask_id, "", len(data), checksum(data)
    )
    validate_mask(MASK, offered, LAYOUT)
    assert _reason(validate_mask, MASK, offered, {"l0": (32, 8)}) is Reason.WRONG_SHAPE
    wrong_bytes = dataclasses.replace(
        MASK, layers={**MASK.layers, "l1": RawTensor("uint8", (1,), b"\0")}
    )
    assert _reason(validate_mask, wrong_bytes, offered, LAYOUT) is Reason.WRONG_SHAPE
    wrong_dtype = dataclasses.replace(
        MASK, layers={**MASK.layers, "l1": RawTensor("int8", (16,), b"\0" * 16)}
    )
    assert _reason(validate_mask, wrong_dtype, offered, LAYOUT) is Reason.WRONG_DTYPE


def test_fp16_bit_widening_is_exact_for_every_bit_pattern() -> None:
    from solora_node.net.validate import _half_magnitudes_into

    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]  # normal, subnormal, both zeros, both signs
    out = np.empty(finite.size, np.float32)
    assert _half_magnitudes_into(finite, out)
    assert np.array_equal(out, np.abs(finite.astype(np.float32)))
    for bad in (np.inf, -np.inf, np.nan):
        piece = np.array([1.0, bad, 2.0], dtype=np.float16)
        assert not _half_magnitudes_into(piece, np.empty(3, np.float32))
