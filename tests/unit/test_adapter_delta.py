"""Deltas on the wire: round trips per encoding, mask records, and refusal of bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from solora_node.adapter import (
    BlockDelta,
    BlockVersion,
    DeltaError,
    MaskError,
    RawTensor,
    apply_block,
    block_tensors,
    block_values,
    calibrate,
    collision_rate,
    extract_block,
    install_mask,
    mask_record,
    set_block_tensors,
    set_block_values,
)
from solora_node.adapter.tensors import decode_values, encode_values
from solora_node.config import FederationSection
from solora_node.method_settings import mask_settings
from tests.unit.test_adapter_helpers import tiny_federation

FED = FederationSection(
    tasks=["arith", "lang", "rev"], mask_mode="random", density=0.25, density_min=0.01
)


def _sender_and_receiver():  # type: ignore[no-untyped-def]
    _, sender = tiny_federation()
    _, receiver = tiny_federation(model_seed=3)
    calibrate(sender, "lang", mask_settings(FED))
    generator = torch.Generator().manual_seed(1)
    set_block_tensors(
        sender,
        "lang",
        {n: torch.randn(s, generator=generator) for n, s in sender.block_shapes().items()},
    )
    install_mask(receiver, mask_record(sender, "lang"))
    return sender, receiver


def test_float32_round_trip_is_bit_exact() -> None:
    sender, receiver = _sender_and_receiver()
    delta = extract_block(sender, "lang", BlockVersion("lang", 4, "node-a"), "float32")
    assert delta.mask_id == sender.mask_id("lang") == receiver.mask_id("lang")
    mask = sender.masks("lang")
    for name, raw in delta.layers.items():
        assert raw.shape == (int(mask[name].sum()),)  # only values under the mask
        assert raw.nbytes == 4 * raw.numel
    apply_block(receiver, delta)
    sent, got = block_tensors(sender, "lang"), block_tensors(receiver, "lang")
    assert all(torch.equal(sent[n], got[n]) for n in sent)


@pytest.mark.parametrize(
    ("encoding", "tolerance", "width"),
    [("bfloat16", 1e-2, 2), ("float16", 1e-3, 2), ("int8", 1.2e-2, 1)],
)
def test_compact_encodings_round_trip_within_their_precision(
    encoding: str, tolerance: float, width: int
) -> None:
    sender, receiver = _sender_and_receiver()
    delta = extract_block(sender, "lang", 1, encoding)
    assert all(raw.nbytes == width * raw.numel for raw in delta.layers.values())
    apply_block(receiver, delta)
    sent, got = block_tensors(sender, "lang"), block_tensors(receiver, "lang")
    for name in sent:
        peak = float(sent[name].abs().max())
        assert (sent[name] - got[name]).abs().max() <= tolerance * peak


def test_int8_encoding_of_zeros_and_decode_checks() -> None:
    raw = encode_values(torch.zeros(5), "int8")
    assert raw.scale == 1.0 and torch.equal(decode_values(raw), torch.zeros(5))
    with pytest.raises(DeltaError, match="needs 20 bytes"):
        decode_values(RawTensor("float32", (5,), b"\x00" * 19))


def test_mask_record_round_trip_and_tamper_detection() -> None:
    sender, receiver = _sender_and_receiver()
    record = mask_record(sender, "lang")
    assert collision_rate(receiver.masks("lang"), sender.masks("lang")) == 1.0
    name = next(iter(record.layers))
    bits = bytearray(record.layers[name].data)
    bits[0] ^= 0x80
    forged = dataclasses.replace(
        record,
        layers={**record.layers, name: dataclasses.replace(record.layers[name], data=bytes(bits))},
    )
    with pytest.raises(MaskError, match="does not hash to its mask_id"):
        install_mask(receiver, forged)
    with pytest.raises(MaskError):
        install_mask(receiver, dataclasses.replace(record, shapes={**record.shapes, name: (3, 4)}))


def _replace_last_layer(delta: BlockDelta, raw: RawTensor) -> BlockDelta:
    # The last layer is the one that is wrong, so an apply that wrote as it went would have
    # already changed the earlier ones: "nothing applied" is then a real check.
    last = list(delta.layers)[-1]
    return dataclasses.replace(delta, layers={**delta.layers, last: raw})


def _bad_deltas(good: BlockDelta) -> dict[str, tuple[BlockDelta, str | None, str]]:
    last = list(good.layers)[-1]
    raw = good.layers[last]
    nan = torch.from_numpy(__import__("numpy").frombuffer(raw.data, dtype="<f4").copy())
    nan[-1] = float("nan")
    return {
        "shape": (
            _replace_last_layer(good, RawTensor("float32", (raw.numel - 1,), raw.data[:-4])),
            None,
            "the mask keeps",
        ),
        "bytes": (
            _replace_last_layer(good, RawTensor("float32", raw.shape, raw.data[:-1])),
            None,
            "needs",
        ),
        "dtype": (
            _replace_last_layer(good, RawTensor("float16", raw.shape, raw.data[: raw.numel * 2])),
            None,
            "differs from the delta's encoding",
        ),
        "unknown dtype": (
            _replace_last_layer(good, RawTensor("float64", raw.shape, raw.data * 2)),
            None,
            "differs",
        ),
        "encoding": (dataclasses.replace(good, encoding="float64"), None, "encoding"),
        "task": (
            dataclasses.replace(good, version=BlockVersion("poetry", 1, "x")),
            None,
            "unknown task 'poetry'",
        ),
        "other task": (
            dataclasses.replace(good, version=BlockVersion("rev", 1, "x")),
            None,
            "mask_id",
        ),
        "mask_id": (dataclasses.replace(good, mask_id="0" * 32), None, "mask_id"),
        "expected mask_id": (good, "f" * 32, "expected ffff"),
        "non-finite": (
            _replace_last_layer(good, RawTensor("float32", raw.shape, nan.numpy().tobytes())),
            None,
            "not all finite",
        ),
        "missing layer": (
            dataclasses.replace(good, layers={k: v for k, v in good.layers.items() if k != last}),
            None,
            "missing",
        ),
        "extra layer": (
            dataclasses.replace(good, layers={**good.layers, "lm_head": raw}),
            None,
            "unexpected",
        ),
        "code shape": (
            dataclasses.replace(good, codes={last: RawTensor("float32", (3,), b"\x00" * 12)}),
            None,
            "routing code",
        ),
    }


def test_bad_deltas_are_refused_and_nothing_is_applied() -> None:
    sender, receiver = _sender_and_receiver()
    generator = torch.Generator().manual_seed(9)
    set_block_tensors(
        receiver,
        "lang",
        {n: torch.randn(s, generator=generator) for n, s in receiver.block_shapes().items()},
    )
    before = {t: block_tensors(receiver, t) for t in receiver.tasks}
    good = extract_block(sender, "lang", 2, "float32")
    for label, (delta, expected, message) in _bad_deltas(good).items():
        with pytest.raises(DeltaError, match=message):
            apply_block(receiver, delta, expected_mask_id=expected)
        for t in receiver.tasks:
            after = block_tensors(receiver, t)
            assert all(torch.equal(before[t][n], after[n]) for n in after), label
        assert receiver.codes == {}, label


def test_norm_bound_and_int8_scale_are_checked() -> None:
    sender, receiver = _sender_and_receiver()
    with pytest.raises(DeltaError, match="above the bound"):
        apply_block(receiver, extract_block(sender, "lang", 1, "float32"), max_norm=1e-3)
    quantised = extract_block(sender, "lang", 1, "int8")
    last = list(quantised.layers)[-1]
    broken = _replace_last_layer(
        quantised, dataclasses.replace(quantised.layers[last], scale=float("inf"))
    )
    with pytest.raises(DeltaError, match="scale"):
        apply_block(receiver, broken)


def test_codes_travel_with_the_block() -> None:
    sender, receiver = _sender_and_receiver()
    sender.codes["lang"] = {
        n: torch.nn.functional.normalize(torch.randn(64), dim=0) for n in sender.code_layers
    }
    apply_block(receiver, extract_block(sender, "lang", 1, "float16"))
    assert set(receiver.codes["lang"]) == set(sender.code_layers)
    for name, code in sender.codes["lang"].items():
        assert torch.equal(receiver.codes["lang"][name], code)  # codes stay float32
    assert extract_block(sender, "lang", 1, include_codes=False).codes == {}


def test_flat_values_for_aggregation() -> None:
    sender, receiver = _sender_and_receiver()
    values = block_values(sender, "lang")
    delta = extract_block(sender, "lang", 1, "float32")
    for name, raw in delta.layers.items():
        assert torch.equal(values[name], decode_values(raw))
    averaged = {n: 0.5 * v for n, v in values.items()}
    set_block_values(receiver, "lang", averaged)
    dense = block_tensors(receiver, "lang")
    for name, mask in receiver.masks("lang").items():
        assert torch.equal(dense[name][mask], averaged[name])
        assert bool((dense[name][~mask] == 0).all())
    last = list(values)[-1]
    with pytest.raises(DeltaError, match="the mask keeps"):
        set_block_values(receiver, "lang", {**values, last: values[last][:-1]})
