"""torch tensors <-> RawTensor (little-endian bytes) in the wire encodings; never pickle."""

from __future__ import annotations

import math

import numpy as np
import torch

from solora_node.adapter.errors import DeltaError
from solora_node.protocol.blocks import WIRE_DTYPES, RawTensor

ENCODINGS = ("float32", "bfloat16", "float16", "int8")
INT8_LEVELS = 127  # symmetric: q in [-127, 127], value = q * scale


def encode_values(values: torch.Tensor, encoding: str) -> RawTensor:
    """Encode a float tensor; int8 uses one symmetric scale per tensor."""
    flat = values.detach().to(device="cpu", dtype=torch.float32).contiguous()
    shape = tuple(flat.shape)
    if encoding == "float32":
        return RawTensor("float32", shape, flat.numpy().astype("<f4").tobytes())
    if encoding == "float16":
        return RawTensor("float16", shape, flat.numpy().astype("<f2").tobytes())
    if encoding == "bfloat16":
        bits = flat.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2")
        return RawTensor("bfloat16", shape, bits.tobytes())
    if encoding == "int8":
        peak = float(flat.abs().max()) if flat.numel() else 0.0
        scale = peak / INT8_LEVELS if peak > 0 else 1.0
        quantised = torch.round(flat / scale).clamp_(-INT8_LEVELS, INT8_LEVELS).to(torch.int8)
        return RawTensor("int8", shape, quantised.numpy().tobytes(), scale=scale)
    raise DeltaError(f"encoding {encoding!r} is not one of {list(ENCODINGS)}")


def decode_values(raw: RawTensor) -> torch.Tensor:
    """Decode to float32, checking that the byte count fits dtype and shape."""
    if raw.dtype not in ENCODINGS:
        raise DeltaError(f"tensor dtype {raw.dtype!r} is not one of {list(ENCODINGS)}")
    if any(d < 0 for d in raw.shape):
        raise DeltaError(f"tensor shape {raw.shape} has a negative dimension")
    expected = raw.numel * WIRE_DTYPES[raw.dtype]
    if raw.nbytes != expected:
        raise DeltaError(
            f"tensor of dtype {raw.dtype} and shape {raw.shape} needs {expected} bytes, "
            f"got {raw.nbytes}"
        )
    if raw.dtype == "float32":
        array = np.frombuffer(raw.data, dtype="<f4").astype(np.float32)
        return torch.from_numpy(array).view(raw.shape)
    if raw.dtype == "float16":
        array = np.frombuffer(raw.data, dtype="<f2").astype(np.float32)
        return torch.from_numpy(array).view(raw.shape)
    if raw.dtype == "bfloat16":
        bits = np.frombuffer(raw.data, dtype="<i2").astype(np.int16)
        return torch.from_numpy(bits).view(torch.bfloat16).to(torch.float32).view(raw.shape)
    if not (math.isfinite(raw.scale) and raw.scale > 0):
        raise DeltaError(f"int8 tensor scale must be a positive finite number, got {raw.scale}")
    quantised = np.frombuffer(raw.data, dtype=np.int8).astype(np.float32)
    return (torch.from_numpy(quantised) * raw.scale).view(raw.shape)
