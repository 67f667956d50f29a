"""Config validation: the promised one-line errors, and the precedence YAML < env < CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from solora_node.config import ConfigError, load_config

INSECURE = {"SOLORA_NETWORK__INSECURE": "true"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, overrides: list[str] | None = None, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or [], environ=env if env is not None else {})
    return info.value.problems


def test_defaults_require_tls_files_not_a_silent_plaintext_fallback() -> None:
    (problem,) = problems_of(None)
    assert "network.tls.ca_cert" in problem and "network.insecure: true" in problem


def test_insecure_must_be_asked_for_explicitly() -> None:
    cfg = load_config(None, ["network.insecure=true"], environ={})
    assert cfg.network.insecure is True


def test_precedence_yaml_then_env_then_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "network: {insecure: true}\ntrain: {lr: 0.1, batch_size: 4}\n")
    env = {"SOLORA_TRAIN__LR": "0.2", "SOLORA_TRAIN__BATCH_SIZE": "6"}
    cfg = load_config(path, ["train.lr=0.3"], environ=env)
    assert cfg.train.lr == 0.3  # CLI beats env
    assert cfg.train.batch_size == 6  # env beats YAML


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("federation: {rank: -1}", "federation.rank = -1: Input should be greater than 0"),
        ("train: {lr: fast}", "train.lr = 'fast'"),
        ("federation: {tasks: [a, a]}", "federation.tasks"),
        ("task: {name: nope}", "task.name 'nope' is not in federation.tasks"),
        ("network: {bootstrap_peers: ['hostonly']}", "must be HOST:PORT"),
        ("federation: {density: 0.05, density_min: 0.2}", "density_min (0.2) must not exceed"),
        ("trian: {lr: 0.1}", "trian: unknown field; expected one of node, federation"),
        ("task: {source: jsonl}", "needs train_file and eval_file"),
        ("train: {lrr: 0.1}", "train.lrr: unknown field; expected one of steps_per_round"),
    ],
)
def test_bad_values_give_one_line_naming_field_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text + "\n")
    found = problems_of(path, env=INSECURE)
    assert any(expected in p for p in found), found
    assert all("\n" not in p and p.startswith(str(path)) for p in found)


def test_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "network: {insecure: true}\ntrain: {lr: -1, batch_size: 0}\n")
    found = problems_of(path)
    assert len(found) == 2
    assert {p.split(":")[1].split("=")[0].strip() for p in found} == {
        "train.lr",
        "train.batch_size",
    }


def test_unreadable_yaml_and_missing_file(tmp_path: Path) -> None:
    assert "config file not found" in problems_of(tmp_path / "absent.yaml")[0]
    assert "not valid YAML at line" in problems_of(write(tmp_path, "a: [1, 2\nb: c"))[0]
    assert "top level must be a mapping" in problems_of(write(tmp_path, "- 1\n- 2\n"))[0]


def test_malformed_cli_override() -> None:
    assert "expected SECTION.FIELD=VALUE" in problems_of(None, ["train.lr"])[0]


def test_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "federation: {rank: 0}\nnetwork: {insecure: true}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "solora_node", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "federation.rank = 0" in proc.stderr
