"""Split an encoded item into bounded chunks, and reassemble it with every bound checked.

The checksum is verified on the whole item afterwards (validate.check_checksum), off the
event loop, together with decoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from solora_node.protocol.reasons import Reason, WireError


def split(data: bytes, chunk_bytes: int) -> list[memoryview]:
    """At least one chunk (an empty item is one empty chunk), each at most chunk_bytes."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    view = memoryview(data)
    if not view:
        return [view]
    return [view[i : i + chunk_bytes] for i in range(0, len(view), chunk_bytes)]


def split_views(parts: Sequence[bytes], chunk_bytes: int) -> Iterator[list[memoryview]]:
    """The chunks of the parts' concatenation (as `split` would cut it), each as views of
    the parts: nothing is copied, the whole item is never joined."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    pending: list[memoryview] = []
    size = 0
    for part in parts:
        view = memoryview(part)
        while view:
            take = view[: chunk_bytes - size]
            pending.append(take)
            size += len(take)
            view = view[len(take) :]
            if size == chunk_bytes:
                yield pending
                pending, size = [], 0
    if pending or not any(parts):
        yield pending


def split_parts(parts: Sequence[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """`split_views`, each chunk joined: the one copy of its bytes."""
    for views in split_views(parts, chunk_bytes):
        yield b"".join(views)


def chunk_count(nbytes: int, chunk_bytes: int) -> int:
    return max(1, -(-nbytes // chunk_bytes))


def _varint_size(value: int) -> int:
    return max(1, -(-value.bit_length() // 7))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, value: int) -> bytes:
    """A proto3 varint field with a one-byte tag: absent when zero."""
    return bytes([tag]) + _varint(value) if value else b""


def chunk_frame_head(round_: int, item_id: int, index: int, total: int, nbytes: int) -> bytes:
    """Everything of a serialised chunk Frame before its `nbytes` of data, byte for byte as
    protobuf writes it (fields in number order, zeros left out): the data can follow
    straight from the item's parts instead of being copied into a message first."""
    data = bytes([0x22]) + _varint(nbytes) if nbytes else b""  # Chunk.data, field 4
    chunk = _field(0x08, item_id) + _field(0x10, index) + _field(0x18, total) + data
    size = len(chunk) + nbytes
    return _field(0x08, round_) + bytes([0x32]) + _varint(size) + chunk  # Frame.chunk, 6


def chunk_frame_size(round_: int, item_id: int, index: int, total: int, nbytes: int) -> int:
    """Serialised size of a Frame carrying a Chunk (protos/solora/v1/exchange.proto), worked
    out from its fields: the protobuf runtime's ByteSize() serialises the whole chunk
    again, one more copy of every byte for a byte count."""
    return len(chunk_frame_head(round_, item_id, index, total, nbytes)) + nbytes


class Reassembler:
    """Collects the chunks of one offered item, in order, and checks every size bound.

    Memory grows only with bytes actually received (a declared size is a
    promise, not an allocation), and never beyond the declared size.
    """

    def __init__(self, nbytes: int, *, max_bytes: int, max_chunk_bytes: int) -> None:
        if nbytes > max_bytes:
            raise WireError(Reason.TOO_LARGE, f"declared {nbytes} bytes, limit {max_bytes}")
        self.nbytes = nbytes
        self._max_chunk = max_chunk_bytes
        self._parts: list[memoryview] = []
        self._received = 0
        self._total: int | None = None
        self._next = 0

    @property
    def received(self) -> int:
        return self._received

    def add(self, index: int, total: int, data: bytes | memoryview) -> bool:
        """Take one chunk; True when the item is complete (all chunks, exactly nbytes)."""
        if self._total is None:
            if total < 1 or total > max(1, self.nbytes):
                raise WireError(
                    Reason.BAD_CHUNK, f"total {total} impossible for {self.nbytes} bytes"
                )
            self._total = total
        elif total != self._total:
            raise WireError(Reason.BAD_CHUNK, f"total changed from {self._total} to {total}")
        if index != self._next:
            kind = (
                "duplicate" if index < self._next else "out of range" if index >= total else "gap"
            )
            raise WireError(Reason.BAD_CHUNK, f"chunk {index} ({kind}), expected {self._next}")
        if len(data) > self._max_chunk:
            raise WireError(
                Reason.TOO_LARGE, f"chunk of {len(data)} bytes, limit {self._max_chunk}"
            )
        if self._received + len(data) > self.nbytes:
            raise WireError(Reason.TOO_LARGE, f"more than the declared {self.nbytes} bytes")
        if not data and self.nbytes:
            raise WireError(Reason.BAD_CHUNK, f"empty chunk {index}")
        self._parts.append(memoryview(data))
        self._received += len(data)
        self._next += 1
        if self._next < total:
            return False
        if self._received != self.nbytes:
            raise WireError(
                Reason.TRUNCATED, f"{self._received} of {self.nbytes} bytes in {total} chunks"
            )
        return True

    def parts(self) -> list[memoryview]:
        """The complete item as the chunks it came in: checksum and decoding read them
        in place (codec.decode_item), joining them would copy every byte once more."""
        if self._total is None or self._next < self._total:
            raise WireError(Reason.TRUNCATED, f"{self._next} of {self._total or '?'} chunks")
        return self._parts

    def result(self) -> bytes:
        """The complete item as one buffer."""
        return b"".join(self.parts())
