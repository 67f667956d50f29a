"""`solora-node serve` as a child process on 127.0.0.1 (for `bench serve` and the tests):
started with --port 0 --json, ready when it prints its url, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from solora_node.errors import SoloraError

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


class ServeProcess:
    def __init__(self, checkpoint: Path, *options: str) -> None:
        self.argv = [sys.executable, "-m", "solora_node", "serve", "--checkpoint", str(checkpoint)]
        self.argv += ["--host", "127.0.0.1", "--port", "0", "--json", *options]
        self.port = 0
        self.url = ""

    def start(self) -> ServeProcess:
        # A file, not a pipe, for its log: a full pipe would stall the server.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""  # empty: it exited (or hangs)
        if not line:
            self.stop()
            raise SoloraError(f"solora-node serve did not start: {self.log_tail()}")
        info = json.loads(line)
        self.port, self.url = int(info["port"]), str(info["url"])
        return self

    def log_tail(self, chars: int = 3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def stop(self) -> int:
        """SIGTERM and wait; one that does not stop in time is killed (exit code -9)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -9
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.stop() != 0:
            sys.stderr.write(self.log_tail() + "\n")
        self.log.close()
