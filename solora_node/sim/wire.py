"""Bytes on the wire, from the payloads the project's codec really produces.

Each distinct message is encoded once (the same delta relayed to k peers costs k times its
encoded size), so the count equals what the codec would put on the wire message by message.
"""

from __future__ import annotations

from solora_node.net.codec import encode_mask, encoded_size
from solora_node.protocol.blocks import BlockDelta, MaskRecord


class WireCounter:
    """Cumulative bytes and messages of one method run; sizes cached per message object."""

    def __init__(self) -> None:
        self.total = 0
        self.messages = 0
        self.mask_bytes = 0
        self._sizes: dict[int, int] = {}
        self._keep: list[object] = []  # keeps cached objects alive, so ids stay unique

    def _size(self, item: BlockDelta | MaskRecord) -> int:
        key = id(item)
        if key not in self._sizes:
            if isinstance(item, MaskRecord):
                self._sizes[key] = len(encode_mask(item))
            else:
                self._sizes[key] = encoded_size(item)
            self._keep.append(item)
        return self._sizes[key]

    def send(self, delta: BlockDelta, mask: MaskRecord | None = None) -> int:
        size = self._size(delta)
        if mask is not None:
            extra = self._size(mask)
            self.mask_bytes += extra
            size += extra
        self.total += size
        self.messages += 1
        return size

    def forget(self) -> None:
        """Drop the cache at a round boundary (old snapshots are never sent again)."""
        self._sizes.clear()
        self._keep.clear()
