"""Static orthogonal projections: orthonormality, cross-process determinism, fingerprints."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from solora_node.adapter import (
    AdapterError,
    ProjectionError,
    SoLoraConfig,
    inject,
    orthogonal_projection,
    projection_fingerprint,
    validate_federation,
)
from solora_node.model import tiny_model
from tests.unit.test_adapter_helpers import TASKS, tiny_config, tiny_federation


def test_slices_are_orthonormal_and_mutually_orthogonal_on_every_layer() -> None:
    _, so = tiny_federation()
    assert len(so.layers) == 4
    for name, layer in so.layers.items():
        blocks = {t: layer.task_projection(t) for t in TASKS}
        for t, a_t in blocks.items():
            assert a_t.dtype == torch.float32 and a_t.shape == (4, layer.in_features)
            eye = torch.eye(a_t.shape[0])
            assert (a_t @ a_t.T - eye).abs().max() < 1e-5, name
            for s, a_s in blocks.items():
                if s != t:
                    assert (a_t @ a_s.T).abs().max() < 1e-5, (name, t, s)


def test_layers_get_different_projections() -> None:
    q0 = orthogonal_projection(1, "model.layers.0.self_attn.q_proj", 64, 8)
    q1 = orthogonal_projection(1, "model.layers.1.self_attn.q_proj", 64, 8)
    assert not torch.allclose(q0, q1)


def test_a_is_never_trainable_nor_saved() -> None:
    _, so = tiny_federation()
    so.train_task("lang")
    trainable = {n for n, p in so.model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_B.lang" for n in so.layers}
    state = so.model.state_dict()
    assert not any("lora_A" in key or "lora_mask" in key for key in state)


_CHILD = """
import hashlib, sys
from solora_node.adapter.projection import orthogonal_projection

q = orthogonal_projection(int(sys.argv[1]), "model.layers.3.self_attn.v_proj", 576, 16)
print(hashlib.sha256(q.numpy().tobytes()).hexdigest())
"""


def test_same_seed_gives_the_same_q_in_another_process() -> None:
    import hashlib

    here = orthogonal_projection(123, "model.layers.3.self_attn.v_proj", 576, 16)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, "123"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert child.stdout.strip() == hashlib.sha256(here.numpy().tobytes()).hexdigest()


def test_fingerprint_is_stable_and_changes_with_seed_tasks_or_rank() -> None:
    _, so = tiny_federation(seed=7)
    shapes = so.shapes
    again = projection_fingerprint(7, TASKS, 4, shapes)
    assert so.fingerprint == again and len(again) == 32
    assert projection_fingerprint(8, TASKS, 4, shapes) != again
    assert projection_fingerprint(7, TASKS[:2], 4, shapes) != again
    assert projection_fingerprint(7, TASKS, 2, shapes) != again
    _, other = tiny_federation(seed=8)
    assert other.fingerprint != so.fingerprint


def test_too_many_rank_slots_is_an_error_naming_layer_and_numbers() -> None:
    model = tiny_model().model  # d_in = 64 everywhere
    with pytest.raises(
        ProjectionError,
        match=r"model\.layers\.0\.self_attn\.q_proj.*3 tasks x rank 32 = 96.*d_in = 64",
    ):
        validate_federation(model, TASKS, 32, ["q_proj", "v_proj"])
    with pytest.raises(ProjectionError, match="96"):
        inject(
            model, SoLoraConfig(seed=1, tasks=TASKS, rank=32, alpha=8.0, target_modules=("q_proj",))
        )
    with pytest.raises(ProjectionError, match="match no linear layer"):
        validate_federation(model, TASKS, 4, ["nope_proj"])
    assert validate_federation(model, TASKS, 21, ["v_proj"])  # 63 <= 64 is fine


def test_config_from_federation_section() -> None:
    from solora_node.config import FederationSection
    from solora_node.method_settings import solora_config

    cfg = solora_config(FederationSection(tasks=["a", "b"], rank=4))
    assert cfg.task_slice("b") == slice(4, 8) and cfg.scale == 16.0 / 4
    assert tiny_config().total_rank == 12


def test_injecting_twice_is_refused() -> None:
    loaded, _ = tiny_federation()
    with pytest.raises(AdapterError, match="already has SO-LoRA layers"):
        inject(loaded.model, tiny_config())
