"""`bench codec`: encode, decode, the wire checksum and validation against a plain copy.

The payload is one default-model round: SmolLM2-135M, 30 layers, q_proj (d_out 576) and
v_proj (d_out 192), rank 8, density 0.1, fp16 values: 0.1 * d_out * 8 values per layer.
No model is loaded for it; the block is synthesised with that shape. A second, large
payload (8 layers of 4 MiB: a 32 MiB block) shows the per-byte cost once per-tensor
overhead vanishes. memcpy is one copy of the encoded bytes into a preallocated buffer: the
floor any codec that produces fresh objects must pay at least once. `validate` is the
numeric check of a received block (finite values, L2 norm); its peak_bytes is the most
memory it allocates (tracemalloc), to show no float32 copy of the block is made.
With --step-model, one SO-LoRA local step of that model is timed too (bench train's
step), and the default round's encode+decode time is given as a fraction of it.
MB/s means 10^6 bytes per second. Timing: best of `repeats` batches (timeit practice).
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from solora_node.net.codec import WIRE_CHECKSUM, checksum, decode_delta, encode_delta
from solora_node.net.validate import block_norm
from solora_node.protocol.blocks import BlockDelta
from solora_node.testing.workload import default_round_layout, random_mask, synthetic_delta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=30, help="decoder layers (default 30)")
    parser.add_argument("--rank", type=int, default=8, help="rank slots per task (default 8)")
    parser.add_argument("--density", type=float, default=0.1, help="mask density (default 0.1)")
    parser.add_argument(
        "--encoding", default="float16", choices=["float32", "bfloat16", "float16", "int8"]
    )
    parser.add_argument("--batch-seconds", type=float, default=0.2, help="length of one batch")
    parser.add_argument("--repeats", type=int, default=5, help="batches; the best one counts")
    parser.add_argument(
        "--step-model",
        default="default",
        help="model whose local step is the yardstick (default, tiny, a folder, or none)",
    )


def best_seconds_per_call(fn: Callable[[], object], batch_seconds: float, repeats: int) -> float:
    calls = 1
    while True:  # calibrate: enough calls per batch to dwarf timer resolution
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= batch_seconds / 4 or calls >= 1 << 20:
            break
        calls *= 2
    calls = max(1, int(calls * batch_seconds / max(elapsed, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure(delta: BlockDelta, batch_seconds: float, repeats: int) -> dict[str, Any]:
    data = encode_delta(delta)
    assert decode_delta(data) == delta
    size = len(data)

    def mb_s(fn: Callable[[], object]) -> float:
        return round(size / best_seconds_per_call(fn, batch_seconds, repeats) / 1e6, 1)

    encode = mb_s(lambda: encode_delta(delta))
    decode = mb_s(lambda: decode_delta(data))
    target = memoryview(bytearray(size))

    def copy() -> None:
        # One memcpy into an existing buffer (bytearray slice assignment is slower for
        # large buffers: CPython copies through a temporary).
        target[:] = data

    memcpy = mb_s(copy)
    check = mb_s(lambda: checksum(data))
    validate = mb_s(lambda: block_norm(delta))
    tracemalloc.start()
    block_norm(delta)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "payload_bytes": size,
        "tensors": len(delta.layers) + len(delta.codes),
        "encode_mb_s": encode,
        "decode_mb_s": decode,
        "memcpy_mb_s": memcpy,
        "checksum_mb_s": check,
        "validate_mb_s": validate,
        "validate_peak_bytes": peak,
        "encode_decode_seconds": round(size / encode / 1e6 + size / decode / 1e6, 9),
        "ratio_to_memcpy": {
            "encode": round(encode / memcpy, 3),
            "decode": round(decode / memcpy, 3),
            "checksum": round(check / memcpy, 3),
            "validate": round(validate / memcpy, 3),
        },
    }


def _local_step_seconds(model: str) -> dict[str, Any]:
    """Median seconds of one SO-LoRA local step (bench train's step and batch, 2 threads)."""
    from solora_node.benchmarks import train  # torch: imported only when asked for

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--model", model, "--steps", "4", "--warmup", "1"])
    figures = train.solora_step_figures(args, threads=2)
    return {"model": model, "threads": 2, "step_seconds": figures["median"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    layout = default_round_layout(layers=args.layers, rank=args.rank)
    mask = random_mask("bench", layout, args.density, seed=0)
    round_block = synthetic_delta(mask, round_=1, origin="bench", encoding=args.encoding, seed=1)
    result = measure(round_block, args.batch_seconds, args.repeats)
    # Large: 8 layers x 4 MiB of values, same code path.
    big_layout = {f"model.layers.{i}.q_proj": (1 << 18, 8) for i in range(8)}
    big_mask = random_mask("bench", big_layout, 1.0, seed=0)
    big_block = synthetic_delta(big_mask, round_=1, origin="bench", encoding=args.encoding, seed=1)
    result["large"] = measure(big_block, args.batch_seconds, max(2, args.repeats // 2))
    if args.step_model != "none":
        step = _local_step_seconds(args.step_model)
        step["round_encode_decode_fraction"] = round(
            result["encode_decode_seconds"] / step["step_seconds"], 6
        )
        result["local_step"] = step
    result.update(
        {
            "benchmark": "codec",
            "checksum": WIRE_CHECKSUM,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "encoding": args.encoding,
            "layers": args.layers,
            "rank": args.rank,
            "density": args.density,
            "mb": "10^6 bytes",
        }
    )
    return result
