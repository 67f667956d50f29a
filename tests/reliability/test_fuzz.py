"""Property-based fuzzing of every decoder of peer input, and of config loading.

The property is always the same: untrusted input yields a value or the module's own error
(WireError with a reason, ConfigError with a message), never another exception, and never
more than the limits allow. Example counts are bounded so CI stays fast; raise them with
HYPOTHESIS_PROFILE=fuzz-long for a longer local run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solora_node._proto import exchange_pb2, handshake_pb2
from solora_node.config import ConfigError, NodeConfig, load_config
from solora_node.net.chunks import Reassembler, split
from solora_node.net.codec import decode_delta, decode_item, decode_mask, encode_delta, encode_mask
from solora_node.net.convert import descriptor_from_proto, hello_from_proto, offer_from_proto
from solora_node.protocol.reasons import WireError
from solora_node.testing.workload import random_mask, synthetic_delta

settings.register_profile("fuzz-ci", max_examples=150, deadline=None)
settings.register_profile("fuzz-long", max_examples=5000, deadline=None)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz-ci"))
fuzz = settings(PROFILE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LAYOUT = {"model.layers.0.q_proj": (32, 4), "model.layers.0.v_proj": (16, 4)}
MASK = random_mask("arithmetic", LAYOUT, 0.5, seed=1)
GOOD_DELTA = encode_delta(synthetic_delta(MASK, round_=3, origin="a"))
GOOD_MASK = encode_mask(MASK)


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, byte in flips:
        buf[pos % len(buf)] ^= byte or 1
    return bytes(buf[:cut] if cut is not None else buf)


mutations = st.tuples(
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, len(GOOD_DELTA))),
)


@fuzz
@given(st.binary(max_size=4096))
def test_codec_decoders_on_random_bytes(data: bytes) -> None:
    for decode in (decode_item, decode_delta, decode_mask):
        with contextlib.suppress(WireError):
            decode(data)


@fuzz
@given(st.sampled_from([GOOD_DELTA, GOOD_MASK]), mutations)
def test_codec_decoders_on_mutated_valid_items(item: bytes, mutation: Any) -> None:
    data = mutate(item, *mutation)
    try:
        decoded = decode_item(data)
    except WireError:
        return
    # Whatever decodes has self-consistent tensors: a buffer exactly as large as its shape.
    tensors = decoded.layers.values()
    for tensor in tensors:
        if tensor.dtype != "int8":
            assert (
                len(tensor.data)
                == int(np.prod(tensor.shape))
                * {"float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1}[tensor.dtype]
            )


names = st.text(max_size=300)


@fuzz
@given(st.binary(max_size=2048))
def test_hello_from_random_bytes(data: bytes) -> None:
    try:
        msg = handshake_pb2.Hello.FromString(data)
    except DecodeError:
        return
    try:
        hello = hello_from_proto(msg)
    except WireError:
        return
    assert len(hello.node_id) <= 256 and len(hello.held) <= 4096


@fuzz
@given(
    node_id=names,
    federation=names,
    fingerprint=names,
    task=names,
    address=names,
    round_=st.integers(0, (1 << 64) - 1),
    version=st.integers(0, (1 << 32) - 1),
    held=st.lists(st.tuples(names, st.integers(0, 1 << 40), names, names), max_size=20),
    peers=st.lists(st.tuples(names, names, names), max_size=20),
)
def test_hello_fields_are_bounded_or_refused(
    node_id: str,
    federation: str,
    fingerprint: str,
    task: str,
    address: str,
    round_: int,
    version: int,
    held: list[tuple[str, int, str, str]],
    peers: list[tuple[str, str, str]],
) -> None:
    msg = handshake_pb2.Hello(
        protocol_version=version,
        federation_id=federation,
        projection_fingerprint=fingerprint,
        node_id=node_id,
        task=task,
        advertised_address=address,
        round=round_,
    )
    for t, r, o, mid in held:
        msg.held.add(task=t, round=r, origin=o, mask_id=mid)
    for n, a, t in peers:
        msg.known_peers.add(node_id=n, address=a, task=t)
    try:
        hello = hello_from_proto(msg)
    except WireError:
        assert (
            max(len(s) for s in (node_id, federation, fingerprint, task, address)) > 256
            or any(len(s) > 256 for h in held for s in (h[0], h[2], h[3]))
            or any(len(s) > 256 for p in peers for s in p)
        )
        return
    assert hello.node_id == node_id and len(hello.held) == len(held)


@fuzz
@given(st.binary(max_size=4096))
def test_offers_and_descriptors_from_random_bytes(data: bytes) -> None:
    try:
        frame = exchange_pb2.Frame.FromString(data)
    except DecodeError:
        return
    try:
        items = offer_from_proto(frame.offer)
    except WireError:
        return
    assert len({d.item_id for d in items}) == len(items)
    for item in items:
        try:
            d = descriptor_from_proto(item)
        except WireError:
            continue
        assert d.kind in ("delta", "mask")


@fuzz
@given(
    nbytes=st.integers(0, 5000),
    chunks=st.lists(
        st.tuples(st.integers(-2, 12), st.integers(-2, 12), st.integers(0, 1500)), max_size=14
    ),
)
def test_reassembly_of_arbitrary_chunk_sequences(
    nbytes: int, chunks: list[tuple[int, int, int]]
) -> None:
    try:
        r = Reassembler(nbytes, max_bytes=4096, max_chunk_bytes=1024)
    except WireError:
        assert nbytes > 4096
        return
    for index, total, size in chunks:
        try:
            done = r.add(index, total, b"x" * size)
        except WireError:
            return
        assert r.received <= nbytes  # never more than declared
        if done:
            assert len(r.result()) == nbytes
            return


@fuzz
@given(st.binary(max_size=3000), st.integers(1, 700))
def test_split_then_reassemble_is_identity(data: bytes, chunk: int) -> None:
    parts = split(data, chunk)
    r = Reassembler(len(data), max_bytes=1 << 20, max_chunk_bytes=chunk)
    done = [r.add(i, len(parts), bytes(p)) for i, p in enumerate(parts)]
    assert done[-1] and not any(done[:-1]) and r.result() == data


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
)
sections = list(NodeConfig.model_fields)
_known = {
    f for s in sections for f in getattr(NodeConfig.model_fields[s].annotation, "model_fields", {})
}
fields = st.sampled_from([*sorted(_known), "bogus"])
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(fields, inner, max_size=3)
    ),
    max_leaves=8,
)
config_maps = st.dictionaries(
    st.one_of(st.sampled_from(sections), st.text(max_size=8)),
    st.one_of(st.dictionaries(fields, values, max_size=5), values),
    max_size=5,
)


def _load(text: str, overrides: list[str] = ()) -> None:  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(path, overrides, environ={})
        except ConfigError as err:
            assert str(err)  # a message for the operator
            return
        assert isinstance(cfg, NodeConfig)


@fuzz
@given(config_maps)
def test_config_from_arbitrary_mappings(data: dict[str, Any]) -> None:
    _load(yaml.safe_dump(data))


@fuzz
@given(st.text(max_size=400))
def test_config_from_arbitrary_text(text: str) -> None:
    _load(text)


@fuzz
@given(st.lists(st.text(max_size=30), max_size=4))
def test_config_cli_overrides(assignments: list[str]) -> None:
    _load("", assignments)
