"""`infer --checkpoint` takes a node's data_dir, its adapter/ or checkpoints/ folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from solora_node.data_dir import find_adapter
from solora_node.errors import SoloraError


def node_data_dir(root: Path, with_adapter: bool = True) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "node.json").write_text("{}")
    if with_adapter:
        (root / "adapter").mkdir()
        (root / "adapter" / "manifest.json").write_text("{}")
    return root


def test_data_dir_adapter_and_checkpoints_all_lead_to_the_adapter(tmp_path: Path) -> None:
    root = node_data_dir(tmp_path / "node")
    assert find_adapter(root) == root / "adapter"
    assert find_adapter(root / "adapter") == root / "adapter"
    assert find_adapter(root / "checkpoints") == root / "adapter"


def test_a_wrong_folder_gets_one_line_saying_what_to_point_at(tmp_path: Path) -> None:
    with pytest.raises(SoloraError) as info:
        find_adapter(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "node's data_dir" in message and "adapter/" in message
    with pytest.raises(SoloraError, match="no such folder"):
        find_adapter(tmp_path / "missing")
    young = node_data_dir(tmp_path / "young", with_adapter=False)
    with pytest.raises(SoloraError, match="first checkpoint"):
        find_adapter(young)


def test_infer_with_a_wrong_folder_exits_2_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "solora_node", "infer", "--checkpoint", str(tmp_path), "hi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "point it at a node's data_dir" in line
