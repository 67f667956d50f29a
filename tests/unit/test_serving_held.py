"""A capped node's serving: a prompt `auto` routes to an expert the node does not hold is
answered by the best held expert, says so (`solora.wanted`), and is reported as a miss."""

from __future__ import annotations

from pathlib import Path

import pytest

from solora_node.adapter.checkpoint import load_checkpoint
from solora_node.config import ServingSection
from solora_node.serving.engine import Outcome
from solora_node.serving.service import make_engine
from tests.unit.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("held") / "adapter", round_=4)


def test_unheld_expert_falls_back_and_is_reported(checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(checkpoint, tmp_path)
    routed: list[tuple[str, bool]] = []
    engine = make_engine(
        loaded.so,
        loaded.base.tokenizer,
        ServingSection(),
        on_route=lambda t, h: routed.append((t, h)),
    )
    prompt = engine.chat_prompt([("user", "What is 2 + 3?")], "What is 2 + 3?")
    free = Outcome()
    engine._set_gate("auto", prompt, free)  # uncapped (held None): routing's choice answers
    best = free.expert
    assert routed == [(best, True)] and "wanted" not in free.solora(4)
    other = next(t for t in loaded.so.tasks if t != best)
    engine.held = frozenset({other})
    capped = Outcome()
    engine._set_gate("auto", prompt, capped)
    assert routed[-1] == (best, False)
    assert capped.expert == other
    assert capped.solora(4)["wanted"] == best
    assert capped.weights[best] == 0.0 and capped.weights[other] == 1.0
