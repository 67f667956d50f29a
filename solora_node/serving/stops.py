"""Stop sequences over streamed text: emit what cannot be the start of a stop, cut at one."""

from __future__ import annotations


class StopCutter:
    """Feed pieces in order; what `feed` returns is safe to send (never part of a stop)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        # Text this long at the end might be the beginning of a stop: hold it back.
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.hit = False

    def feed(self, piece: str) -> str:
        if self.hit:
            return ""
        self.text += piece
        found = [p for s in self.stops if (p := self.text.find(s, self.sent)) >= 0]
        end = min(found) if found else max(self.sent, len(self.text) - self.hold)
        self.hit = bool(found)
        out, self.sent = self.text[self.sent : end], end
        return out

    def flush(self) -> str:
        """The held-back rest once generation ended without a stop."""
        if self.hit:
            return ""
        out, self.sent = self.text[self.sent :], len(self.text)
        return out
