"""A WireObserver that counts in memory: what tests assert about refusals and bytes."""

from __future__ import annotations

from collections import Counter

from solora_node.net.observe import ByteKind, Direction
from solora_node.protocol.messages import ExchangeResult
from solora_node.protocol.reasons import Reason


class CountingObserver:
    """Counts everything in memory, so a test can assert what the wire saw."""

    def __init__(self) -> None:
        self.refused_by_me: Counter[Reason] = Counter()
        self.refused_by_peer: Counter[Reason] = Counter()
        self.handshakes_refused: Counter[Reason] = Counter()
        self.bytes: Counter[tuple[str, str]] = Counter()
        self.results: list[ExchangeResult] = []

    def item_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None:
        (self.refused_by_me if by_me else self.refused_by_peer)[reason] += 1

    def handshake_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None:
        self.handshakes_refused[reason] += 1

    def bytes_moved(self, kind: ByteKind, direction: Direction, nbytes: int) -> None:
        self.bytes[(kind, direction)] += nbytes

    def exchange_finished(self, result: ExchangeResult) -> None:
        self.results.append(result)
