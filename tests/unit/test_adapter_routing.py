"""`auto` routing: codes from local data, a dual-basis gate, held-out prompts of clearly
different tasks routed to their own expert (tiny model; codes need no training)."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from solora_node.adapter import dual_basis, gate_weights, route, task_codes
from solora_node.adapter.errors import AdapterError
from solora_node.adapter.prompts import prompt_batch
from tests.unit.test_adapter_helpers import TASKS, tiny_federation

FRENCH = [
    "bonjour",
    "merci",
    "beaucoup",
    "madame",
    "je",
    "voudrais",
    "une",
    "table",
    "pour",
    "deux",
    "personnes",
    "ce",
    "soir",
    "nous",
    "allons",
    "au",
    "marché",
    "avec",
    "les",
    "enfants",
    "il",
    "fait",
    "très",
    "beau",
    "aujourd'hui",
    "la",
    "maison",
    "est",
    "grande",
    "et",
    "le",
    "jardin",
    "est",
    "joli",
    "où",
    "est",
    "la",
    "gare",
    "s'il",
    "vous",
    "plaît",
]


def routing_prompts(task: str, count: int, rng: random.Random) -> list[str]:
    if task == "arith":
        return [f"What is {rng.randint(0, 99)} + {rng.randint(0, 99)}?" for _ in range(count)]
    if task == "lang":
        return [" ".join(rng.sample(FRENCH, 6)).capitalize() + "." for _ in range(count)]
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        "Reverse the letters: " + " ".join(rng.sample(letters, rng.randint(3, 5)))
        for _ in range(count)
    ]


def test_auto_routing_picks_the_right_expert_on_held_out_prompts() -> None:
    loaded, so = tiny_federation()
    rng = random.Random(0)
    for task in TASKS:  # each node computes its task's code on its own local data
        so.codes[task] = task_codes(so, loaded.tokenizer, routing_prompts(task, 24, rng), 12)
    held_out = {task: routing_prompts(task, 12, random.Random(1)) for task in TASKS}
    so.use_task("rev")  # routing must not depend on the gate the model is in
    for index, task in enumerate(TASKS):
        weights = route(so, prompt_batch(loaded.tokenizer, held_out[task]), top1=True)
        assert weights.shape == (12, 3)
        assert bool((weights.argmax(dim=-1) == index).all()), task
        soft = route(so, prompt_batch(loaded.tokenizer, held_out[task]))
        assert torch.allclose(soft.sum(-1), torch.ones(12))
        assert bool((soft.argmax(dim=-1) == index).all())
    assert so.gate.mode == "task" and so.gate.tasks[so.gate.index] == "rev"


def test_dual_basis_separates_nearly_collinear_codes() -> None:
    common = torch.nn.functional.normalize(torch.randn(32), dim=0)
    directions = torch.randn(3, 32) * 0.05
    codes = torch.nn.functional.normalize(common + directions, dim=-1)
    assert float((codes @ codes.T).min()) > 0.9  # raw cosine barely tells them apart
    dual = dual_basis(codes, ridge=1e-6)
    assert torch.allclose(dual @ codes.T, torch.eye(3), atol=1e-3)
    picked = gate_weights(codes, dual, top1=True)
    assert torch.equal(picked, torch.eye(3))


def test_missing_codes_route_among_the_others_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A node whose first rounds brought no block (hence no code) of one task yet.
    loaded, so = tiny_federation()
    rng = random.Random(0)
    for task in TASKS[:2]:
        so.codes[task] = task_codes(so, loaded.tokenizer, routing_prompts(task, 24, rng), 12)
    missing = TASKS[2]
    batch = prompt_batch(loaded.tokenizer, routing_prompts(missing, 6, random.Random(1)))
    with caplog.at_level(logging.WARNING, logger="solora_node.adapter.routing"):
        top1 = route(so, batch, top1=True)
        soft = route(so, batch)
    assert top1.shape == soft.shape == (6, 3)
    assert bool((top1[:, 2] == 0).all()) and bool((soft[:, 2] == 0).all())  # never picked
    assert torch.allclose(soft.sum(-1), torch.ones(6))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"no routing codes for ['{missing}']" in warnings[0]
    so.codes.clear()
    with pytest.raises(AdapterError, match="none of the tasks"):
        route(so, batch)
