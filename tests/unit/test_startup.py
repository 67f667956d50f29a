"""OS failures at start as one line naming the config field (solora_node/node/startup.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from solora_node.node.startup import (
    StartupError,
    check_port_free,
    check_writable_dir,
    os_error_at_start,
)


def test_port_held_by_a_listener_is_named() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(StartupError) as caught:
            check_port_free("metrics.port", "127.0.0.1", port)
    assert str(caught.value) == (
        f"metrics.port: cannot bind 127.0.0.1:{port} (address already in use by another process)"
    )
    check_port_free("metrics.port", "127.0.0.1", 0)  # any free port: nothing to check


def test_unwritable_data_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StartupError, match=r"^node\.data_dir: cannot write to .*file/sub"):
        check_writable_dir("node.data_dir", blocker / "sub")
    check_writable_dir("node.data_dir", tmp_path / "fine")
    assert list((tmp_path / "fine").iterdir()) == []  # the probe is gone


def test_any_other_os_error_at_start_is_one_line() -> None:
    error = os_error_at_start(PermissionError(13, "Permission denied", "/etc/solora/x.jsonl"))
    assert str(error) == "cannot start: permission denied (/etc/solora/x.jsonl)"
