"""Structured logs: one line per event, plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(
    level: str = "info", json_lines: bool = False, node_id: str = "", stream: TextIO | None = None
) -> None:
    """Replace the root handlers: logs go to stderr, stdout stays for --json output.

    Python warnings become records too (logger py.warnings), so with json_lines every
    line is one JSON object; `stream` is the original stderr once native_stderr has
    taken over fd 2."""
    handler = logging.StreamHandler(stream or sys.stderr)
    logging.captureWarnings(True)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"[{node_id}] " if node_id else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries stay at warning unless we debug.
    for noisy in ("httpx", "urllib3", "filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
