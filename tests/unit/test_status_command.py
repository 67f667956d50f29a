"""`solora-node status`: where it finds TLS material, what it says when it finds none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from solora_node.config_locate import CONFIG_ENV, locate_node_config
from solora_node.errors import SoloraError


def test_explicit_config_wins(tmp_path: Path) -> None:
    given, from_env = tmp_path / "a.yaml", tmp_path / "b.yaml"
    given.write_text("{}")
    from_env.write_text("{}")
    path, _ = locate_node_config(given, {CONFIG_ENV: str(from_env)}, default=from_env)
    assert path == given


def test_environment_comes_before_the_default_path(tmp_path: Path) -> None:
    from_env, default = tmp_path / "env.yaml", tmp_path / "default.yaml"
    from_env.write_text("{}")
    default.write_text("{}")
    path, tried = locate_node_config(None, {CONFIG_ENV: str(from_env)}, default=default)
    assert path == from_env
    assert tried == ["--config (not given)"]


def test_default_path_is_used_last(tmp_path: Path) -> None:
    default = tmp_path / "node.yaml"
    default.write_text("{}")
    path, tried = locate_node_config(None, {}, default=default)
    assert path == default
    assert tried == ["--config (not given)", f"${CONFIG_ENV} (not set)"]


def test_nothing_found_lists_every_place_tried(tmp_path: Path) -> None:
    default = tmp_path / "missing.yaml"
    path, tried = locate_node_config(None, {}, default=default)
    assert path is None
    assert tried == ["--config (not given)", f"${CONFIG_ENV} (not set)", f"{default} (not found)"]


@pytest.mark.parametrize("source", ["flag", "env"])
def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path, source: str) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SoloraError, match=r"nope\.yaml: no such file"):
        if source == "flag":
            locate_node_config(missing, {})
        else:
            locate_node_config(None, {CONFIG_ENV: str(missing)})


def test_cli_without_tls_material_says_what_it_tried_in_one_line(tmp_path: Path) -> None:
    # A deployed box may hold the real default config; this test needs a box without one.
    if Path("/etc/solora-node/node.yaml").exists():
        pytest.skip("/etc/solora-node/node.yaml exists on this machine")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = (
        "import sys; from solora_node.cli import main; rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'peft', 'transformers') if m in sys.modules]; "
        "print('heavy=' + ','.join(heavy)); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "status", "--addr", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "--config (not given)" in lines[0] and f"${CONFIG_ENV} (not set)" in lines[0]
    assert "/etc/solora-node/node.yaml (not found)" in lines[0]
    assert out.stdout.strip() == "heavy="
