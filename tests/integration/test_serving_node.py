"""A running node's OpenAI-compatible API, through the official `openai` client: the
freshest experts of the round it is in, streaming, `auto`, an error, and a clean stop."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import openai
import pytest

from solora_node.testbed.local import LocalFederation, NodeSpec
from tests.integration.federation import TINY_BASE, metric, wait_until

TASK = "arithmetic"


def test_a_node_serves_its_freshest_experts_over_the_openai_api(tmp_path: Path) -> None:
    base = {
        **TINY_BASE,
        "discovery": {"mdns": False},
        "serving": {"enabled": True, "port": 0, "max_tokens": 32},
    }
    fed = LocalFederation(tmp_path, [NodeSpec("solo", TASK)], base, tls=False)
    with fed:
        fed.start()
        fed.wait_ready()
        info = json.loads((tmp_path / "solo" / "node.json").read_text())
        assert info["serving_port"] > 0
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{info['serving_port']}/v1",
            api_key="unused",
            max_retries=0,
            timeout=60,
        )
        assert [m.id for m in client.models.list().data] == [
            *TINY_BASE["federation"]["tasks"],
            "auto",
        ]

        question = [{"role": "user", "content": "What is 3 + 4?"}]
        wait_until(lambda: metric(fed, "solo", "solora_round{}") >= 2, 90, "round 2")
        first = client.chat.completions.create(model=TASK, messages=question, max_tokens=6)
        first_round = first.model_extra["solora"]["round"]
        assert first_round >= 1 and first.model_extra["solora"]["expert"] == TASK

        def served_round() -> int:
            reply = client.completions.create(model=TASK, prompt="1 + 1 =", max_tokens=1)
            return int(reply.model_extra["solora"]["round"])

        wait_until(lambda: served_round() > first_round, 90, "a fresher round being served")

        # Only this node's routing code is held: auto routes to its own expert.
        auto = client.chat.completions.create(model="auto", messages=question, max_tokens=4)
        assert auto.model_extra["solora"]["expert"] == TASK
        assert auto.model_extra["solora"]["gate"][TASK] == pytest.approx(1.0)

        pieces = client.chat.completions.create(
            model=TASK, messages=question, max_tokens=6, stream=True
        )
        finishes = [c.choices[0].finish_reason for c in pieces if c.choices]
        assert finishes[-1] in ("stop", "length")

        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=question)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=TASK, messages=question, max_tokens=33)

        fed.signal("solo", signal.SIGTERM)
        assert fed.wait_exit("solo", 15) == 0, fed.tail("solo")
