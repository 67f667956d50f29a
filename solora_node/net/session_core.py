"""What both halves of an exchange share: its state, and the frames both send (acks).

net/sending.py and net/receiving.py build on it; net/session.py joins the two halves
with the loop that reads frames and dispatches them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from solora_node._proto import exchange_pb2
from solora_node.net.chunks import Reassembler
from solora_node.net.frames import ChunkFrame, EncodedChunk, OutFrame
from solora_node.net.limits import WireLimits
from solora_node.net.observe import RefusalLog, WireObserver
from solora_node.net.outbox import Outbox, WriteFrame
from solora_node.net.port import BlockStore
from solora_node.protocol.messages import Descriptor, PeerContext
from solora_node.protocol.reasons import Reason, WireError

Frame = exchange_pb2.Frame
ReadFrame = Callable[[], Awaitable["exchange_pb2.Frame | ChunkFrame | None"]]

# Complete items queued for validation while the next one is being received.
_VALIDATION_DEPTH = 2


@dataclass
class OutgoingItem:
    """One encoded item this side offers: its descriptor and the parts whose concatenation
    is the encoded item (codec *_parts), chunked without being joined."""

    descriptor: Descriptor
    parts: Sequence[bytes]

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


class SessionCore:
    """One exchange's state, over a stream whose handshake already succeeded."""

    def __init__(
        self,
        store: BlockStore,
        peer: PeerContext,
        read: ReadFrame,
        write: WriteFrame,
        limits: WireLimits,
        observer: WireObserver,
        refusal_log: RefusalLog,
        *,
        initiated: bool,
    ) -> None:
        self.store = store
        self.peer = peer
        self.limits = limits
        self.observer = observer
        self.refusal_log = refusal_log
        self.initiated = initiated
        self._read = read
        self._outbox = Outbox(write, self._count_written)
        self._round = store.hello().round
        self._deadline = time.monotonic() + limits.exchange_deadline_s
        # What we send.
        self._outgoing: dict[int, OutgoingItem] = {}
        self._awaiting_ack: set[int] = set()
        self._acked: set[int] = set()
        self._want_seen = False
        self._done_sent = False
        self._sender: asyncio.Task[None] | None = None
        # What we receive.
        self._offer_seen = False
        self._incoming: dict[int, Descriptor] = {}  # wanted, not yet finished
        self._current: tuple[int, Reassembler] | None = None
        self._peer_done = False
        # Complete items waiting for (or in) validation; a small queue bounds the memory.
        self._to_validate: asyncio.Queue[tuple[Descriptor, list[memoryview]]] = asyncio.Queue(
            maxsize=_VALIDATION_DEPTH
        )
        self._validating: dict[int, Descriptor] = {}
        # Results.
        self._sent_ok = 0
        self._received_ok = 0
        self._refused_by_peer: Counter[Reason] = Counter()
        self._refused_by_me: Counter[Reason] = Counter()
        self._bytes_sent = 0
        self._bytes_received = 0

    @property
    def peer_id(self) -> str:
        return self.peer.hello.node_id

    # ------------------------------------------------------------ frames out

    def _frame(self, **body: object) -> exchange_pb2.Frame:
        return Frame(round=self._round, **body)  # type: ignore[arg-type]

    def _count_written(self, frame: OutFrame, size: int) -> None:
        self._bytes_sent += size
        chunk = isinstance(frame, EncodedChunk) or frame.HasField("chunk")
        self.observer.bytes_moved("delta" if chunk else "control", "sent", size)

    def _ack(self, item_id: int, reason: Reason, message: str = "") -> None:
        self._outbox.control(
            self._frame(
                ack=exchange_pb2.Ack(
                    item_id=item_id, reason=reason.to_proto(), message=message[:200]
                )
            )
        )

    def _refuse(self, item_id: int, error: WireError) -> None:
        self._refused_by_me[error.reason] += 1
        self.observer.item_refused(self.peer_id, error.reason, by_me=True)
        self.refusal_log.refused(self.peer_id, error.reason, error.detail)
        self._ack(item_id, error.reason, error.detail)
