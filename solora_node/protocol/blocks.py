"""What travels between nodes, independent of transport: raw tensors and task blocks.

These types are the contract between the method (adapter/), the wire (net/codec.py)
and the daemon. They hold plain bytes, never pickled objects: a peer's data is only
ever interpreted as numbers of a declared dtype and shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# dtype names used on the wire; all multi-byte types are little-endian, C order.
WIRE_DTYPES: dict[str, int] = {
    "float32": 4,
    "bfloat16": 2,
    "float16": 2,
    "int8": 1,
    "uint8": 1,  # packed mask bits
}


@dataclass(frozen=True)
class RawTensor:
    """A tensor as bytes: little-endian values of `dtype` in C order with `shape`.

    For dtype int8 the real value is `q * scale` (symmetric per-tensor quantisation).
    """

    dtype: str
    shape: tuple[int, ...]
    data: bytes
    scale: float = 1.0

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class BlockVersion:
    """Which copy of a task block this is: the task's cluster state at a round.

    `origin` is the node that produced this copy; averaging copies of one
    (task, round) from different origins is allowed, mixing tasks never is.
    """

    task: str
    round: int
    origin: str
    incarnation: int = 0  # the origin process's start (unix µs); 0: unknown (older peer)


@dataclass(frozen=True)
class BlockDelta:
    """One task's B block: per adapted layer, the values under the mask in mask order."""

    version: BlockVersion
    mask_id: str
    encoding: str  # one of WIRE_DTYPES except uint8
    layers: dict[str, RawTensor]
    # Per-layer routing code mu_t (normalised mean input) for the implicit-MoE gate.
    codes: dict[str, RawTensor] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.version.task

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.layers.values()) + sum(
            t.nbytes for t in self.codes.values()
        )


@dataclass(frozen=True)
class MaskRecord:
    """A task's sparsity mask, content-addressed by `mask_id`.

    Per layer a packed bit field (uint8, numpy.packbits order 'big') over the
    B block of shape (d_out, r); sent once to a peer that lacks this mask_id.
    """

    task: str
    mask_id: str
    layers: dict[str, RawTensor]
    shapes: dict[str, tuple[int, int]]
