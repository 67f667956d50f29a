"""Operating-system failures while a node starts, as one line naming the config field.

A port in use, a full or read-only data_dir, a missing permission: each becomes a
StartupError (exit 2, no traceback) that says which field to fix and what the OS said.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator

from solora_node.errors import SoloraError


class StartupError(SoloraError):
    """The node cannot start because of the OS (ports, disk, permissions)."""


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.EADDRINUSE:
            return "address already in use by another process"
        if exc.errno == errno.ENOSPC:
            return "no space left on device"
        if exc.strerror:
            return exc.strerror.lower()
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def os_failure(field: str, what: str) -> Iterator[None]:
    """Turn an OSError (and gRPC's RuntimeError "Failed to bind") into a StartupError."""
    try:
        yield
    except StartupError:
        raise
    except (OSError, RuntimeError) as exc:
        raise StartupError(f"{field}: cannot {what} ({_cause(exc)})") from None


def os_error_at_start(exc: OSError) -> StartupError:
    """Any other OS error while starting: still one line, naming the file when known."""
    where = f" ({exc.filename})" if exc.filename else ""
    return StartupError(f"cannot start: {_cause(exc)}{where}")


def check_port_free(field: str, host: str, port: int) -> None:
    """Bind (host, port) once without SO_REUSEPORT, the way a second server would collide.

    gRPC binds with SO_REUSEPORT, so two nodes on one port could both start and split the
    traffic between them; a plain bind fails with EADDRINUSE in that case. Port 0 (any
    free port) needs no check."""
    if port == 0:
        return
    bind_host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with os_failure(field, f"bind {host}:{port}"), socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        s.bind((bind_host, port))


def check_writable_dir(field: str, path: os.PathLike[str] | str) -> None:
    """Create the directory and write one small file to it: full, read-only or forbidden
    disks fail here, before any port is bound or anything is advertised."""
    with os_failure(field, f"write to {path}"):
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-probe-{os.getpid()}")
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 4096)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
