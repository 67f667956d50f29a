"""Relative paths in a config file resolve against its folder; a bad value names its source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solora_node.config import ConfigError, load_config


def problems_of(path: Path | None, overrides: list[str], env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, environ=env)
    return info.value.problems


def test_relative_paths_in_a_file_resolve_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "node.yaml"
    path.write_text(
        "node: {data_dir: state}\n"
        "model: {base: models/mine, cache_dir: ~/cache}\n"
        "task: {source: jsonl, train_file: data/train.jsonl, eval_file: /abs/eval.jsonl}\n"
        "network: {tls: {ca_cert: tls/ca.pem, cert: tls/n.pem, key: tls/n.key}}\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "var"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory of a systemd unit, say
    cfg = load_config(path, [], environ={})
    assert cfg.node.data_dir == etc / "state"
    assert cfg.model.base == str(etc / "models/mine")
    assert cfg.model.cache_dir == Path("~/cache").expanduser()
    assert cfg.task.train_file == etc / "data/train.jsonl"
    assert cfg.task.eval_file == Path("/abs/eval.jsonl")
    assert cfg.network.tls.cert == etc / "tls/n.pem"


def test_builtin_model_names_and_shell_given_paths_stay_as_typed(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("model: {base: tiny}\nnetwork: {insecure: true}\n", encoding="utf-8")
    cfg = load_config(path, ["node.data_dir=here"], environ={"SOLORA_MODEL__CACHE_DIR": "c"})
    assert cfg.model.base == "tiny"
    assert cfg.node.data_dir == Path("here")  # --set: relative to the shell's folder
    assert cfg.model.cache_dir == Path("c")


def test_a_bad_value_is_blamed_on_the_layer_that_set_it(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "network: {insecure: true}\ntrain: {lr: 0.1, batch_size: 4}\n", encoding="utf-8"
    )
    (env_problem,) = problems_of(path, [], {"SOLORA_TRAIN__LR": "fast"})
    assert env_problem.startswith("environment SOLORA_TRAIN__LR: train.lr = 'fast'"), env_problem
    (cli_problem,) = problems_of(path, ["train.batch_size=-1"], {"SOLORA_TRAIN__LR": "0.2"})
    assert cli_problem.startswith("--set train.batch_size: train.batch_size = -1"), cli_problem
    # The file is blamed only for what it set, even when env and --set are present.
    path.write_text("network: {insecure: true}\ntrain: {lr: 7}\n", encoding="utf-8")
    (file_problem,) = problems_of(path, ["train.batch_size=2"], {"SOLORA_TRAIN__SEED": "1"})
    assert file_problem.startswith(f"{path}: train.lr = 7"), file_problem


def test_a_utf8_bom_in_a_config_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_bytes(b"\xef\xbb\xbfnetwork: {insecure: true}\nnode: {id: bom-node}\n")
    assert load_config(path, [], environ={}).node.id == "bom-node"


def test_certs_issue_prints_a_snippet_that_loads_from_another_folder(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "solora_node"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([*run, "certs", "init-ca", "--dir", "ca"], cwd=tmp_path, env=env, check=True)
    out = subprocess.run(
        [*run, "certs", "issue", "box-a", "--dir", "ca", "--out", "out"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    elsewhere = tmp_path / "etc" / "solora-node"
    elsewhere.mkdir(parents=True)
    config = elsewhere / "node.yaml"
    config.write_text("node: {id: box-a}\n" + out, encoding="utf-8")  # pasted as printed
    cfg = load_config(config, [], environ={})
    assert cfg.network.tls.cert is not None and cfg.network.tls.cert.is_file()
    assert cfg.network.tls.ca_cert is not None and cfg.network.tls.ca_cert.is_file()
    assert cfg.network.tls.key is not None and cfg.network.tls.key.is_file()
    assert json.loads(
        subprocess.run(
            [*run, "certs", "issue", "box-b", "--dir", "ca", "--json"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["cert"].startswith("/")
