"""Route whatever the process writes to file descriptor 2 through Python logging.

gRPC core (C++), torch and a last-chance traceback write straight to fd 2, around the
logging handlers. The daemon points fd 2 at a pipe and a reader thread turns every line
into a log record: with `node.log_json: true` every line on stderr is then one JSON
object, and gRPC core's TLS handshake errors become records that the node can count
(see solora_node/tls_watch.py). The log handler itself writes to a duplicate of the
original stderr, so its lines never loop back through the pipe.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TextIO

GRPC_CORE_LOGGER = "grpc.core"
NATIVE_LOGGER = "stderr"
# gRPC core's glog-style prefix: "E1202 15:04:05.123456   123 file.cc:42] message".
_GLOG = re.compile(r"^([EWIDF])\d{4} [\d:.]+\s+\d+ (\S+:\d+)\] (.*)$")
_GLOG_LEVELS = {
    "E": logging.ERROR,
    "W": logging.WARNING,
    "I": logging.INFO,
    "D": logging.DEBUG,
    "F": logging.CRITICAL,
}


def parse_line(line: str) -> tuple[str, int, str] | None:
    """(logger, level, message) for one raw stderr line; None for a JSON line or blank."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return None  # already one JSON object (e.g. our own --json error path)
        except ValueError:
            pass
    match = _GLOG.match(text)
    if match is not None:
        level, where, message = match.groups()
        return GRPC_CORE_LOGGER, _GLOG_LEVELS[level], f"{message} ({where})"
    return NATIVE_LOGGER, logging.WARNING, text


class _Pump(threading.Thread):
    def __init__(self, read_fd: int, passthrough: TextIO, wrap_plain: bool) -> None:
        super().__init__(name="native-stderr", daemon=True)
        self.read_fd = read_fd
        self.passthrough = passthrough
        self.wrap_plain = wrap_plain

    def run(self) -> None:
        with io.open(self.read_fd, "r", encoding="utf-8", errors="replace") as lines:  # noqa: UP020
            for line in lines:
                parsed = parse_line(line)
                if parsed is None or (parsed[0] == NATIVE_LOGGER and not self.wrap_plain):
                    if line.strip():
                        self.passthrough.write(line if line.endswith("\n") else line + "\n")
                        self.passthrough.flush()
                    continue
                name, level, message = parsed
                logging.getLogger(name).log(level, "%s", message)


def capture_native_stderr(wrap_plain: bool) -> TextIO:
    """Point fd 2 at a pipe read by a logging thread; returns the original stderr stream,
    which the log handler must write to. Restored (and the pipe drained) at exit.

    gRPC core's lines always become records; other lines only when wrap_plain (JSON
    logs), else they pass through unchanged."""
    sys.stderr.flush()
    original = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = _Pump(read_fd, original, wrap_plain)
    pump.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original.fileno(), 2)  # the pipe's last writer closes: the pump sees EOF
        pump.join(timeout=2.0)
        original.flush()

    _restore_hooks.append(restore)
    atexit.register(restore_native_stderr)
    return original


_restore_hooks: list[Callable[[], None]] = []


def restore_native_stderr() -> None:
    """Give fd 2 back and drain the pipe; at exit, or before an os._exit (idempotent)."""
    while _restore_hooks:
        _restore_hooks.pop()()
