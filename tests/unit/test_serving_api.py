"""`solora-node serve` through the official `openai` client: models, completions, chat,
streaming, `auto` routing with its extra field, stop sequences and OpenAI-shaped errors."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch

from solora_node.adapter.checkpoint import LoadedCheckpoint, load_checkpoint
from solora_node.adapter.inference import answer
from solora_node.adapter.prompts import prompt_batch
from solora_node.adapter.routing import route
from solora_node.serving.process import ServeProcess
from tests.unit.test_adapter_helpers import TASKS
from tests.unit.tiny_checkpoint import write_tiny_checkpoint

QUESTION = "What is 41 + 17?"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "adapter", round_=9)


@pytest.fixture(scope="module")
def reference(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedCheckpoint:
    """The same checkpoint in this process: what the server must agree with."""
    return load_checkpoint(checkpoint, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def served(checkpoint: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(checkpoint, "--threads", "1").start()
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"serve exited with {code} on SIGTERM:\n{server.log_tail()}"
        server.log.close()


@pytest.fixture
def client(served: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=60)


def test_models_are_the_tasks_and_auto(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [*TASKS, "auto"]
    assert all(m.model_extra["solora"] == {"held": True, "round": 9} for m in models.data)


def test_chat_with_a_task_answers_like_infer(
    client: openai.OpenAI, reference: LoadedCheckpoint
) -> None:
    reply = client.chat.completions.create(
        model="lang", messages=[{"role": "user", "content": QUESTION}], max_tokens=8
    )
    expected = answer(reference.so, reference.base.tokenizer, QUESTION, "lang", max_new_tokens=8)
    assert reply.choices[0].message.content.strip() == expected.text
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    assert reply.model_extra["solora"]["expert"] == "lang"
    assert reply.model_extra["solora"]["gate"] == {"arith": 0.0, "lang": 1.0, "rev": 0.0}


def test_auto_routes_with_the_implicit_gate_and_says_so(
    client: openai.OpenAI, reference: LoadedCheckpoint
) -> None:
    so, tokenizer = reference.so, reference.base.tokenizer
    for question in (QUESTION, "Reverse the letters: q w e"):
        weights = route(so, prompt_batch(tokenizer, [question]))[0]
        chosen = so.tasks[int(weights.argmax())]
        reply = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": question}], max_tokens=6
        )
        extra = reply.model_extra["solora"]
        assert extra["expert"] == chosen and extra["router"] == "top1"
        assert extra["gate"] == pytest.approx(
            {t: float(w) for t, w in zip(so.tasks, weights, strict=True)}, abs=1e-5
        )
        fixed = answer(so, tokenizer, question, chosen, max_new_tokens=6)
        assert reply.choices[0].message.content.strip() == fixed.text
    assert {
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": q}], max_tokens=1
        ).model_extra["solora"]["expert"]
        for q in (QUESTION, "Reverse the letters: q w e")
    } == {"arith", "rev"}


def test_streaming_gives_the_same_text_as_a_whole_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(model="arith", messages=messages, max_tokens=10)
    chunks = list(
        client.chat.completions.create(
            model="arith",
            messages=messages,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage == whole.usage
    assert all(c.model_extra["solora"]["expert"] == "arith" for c in chunks if c.choices)

    prompt = "Once upon a time"
    plain = client.completions.create(model="rev", prompt=prompt, max_tokens=10)
    streamed = client.completions.create(model="rev", prompt=prompt, max_tokens=10, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    assert plain.model_extra["solora"]["expert"] == "rev"


def test_stop_sequences_cut_the_text(client: openai.OpenAI) -> None:
    free = client.completions.create(model="arith", prompt=QUESTION, max_tokens=12)
    text = free.choices[0].text
    assert len(text) >= 4, text
    stop = text[2:4]
    cut = client.completions.create(model="arith", prompt=QUESTION, max_tokens=12, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="arith", prompt=QUESTION, max_tokens=12, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_bad_requests_get_openai_errors(client: openai.OpenAI, served: ServeProcess) -> None:
    chat = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4", messages=chat)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.completions.create(model="arith", prompt="hi", max_tokens=100_000)
    assert too_many.value.code == "invalid_value" and "max_tokens" in str(too_many.value)
    with pytest.raises(openai.BadRequestError) as context:
        client.completions.create(model="arith", prompt="x" * 600, max_tokens=8)
    assert context.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="arith", messages=[])

    request = urllib.request.Request(
        served.url + "/chat/completions",
        data=b'{"model": "arith", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as malformed:
        urllib.request.urlopen(request, timeout=10)
    assert malformed.value.code == 400
    body = json.loads(malformed.value.read())
    assert body["error"]["code"] == "invalid_json"
    assert set(body["error"]) == {"message", "type", "param", "code"}

    # The server answers 413 from the declared length, before the body: a client still
    # writing 2 MiB may see the connection close, so the body is not sent here.
    url = urllib.parse.urlsplit(served.url + "/completions")
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.putrequest("POST", url.path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(2 << 20))
        conn.endheaders()
        too_large = conn.getresponse()
        assert too_large.status == 413
        assert json.loads(too_large.read())["error"]["code"] == "request_too_large"
    finally:
        conn.close()


def test_serve_refuses_a_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "solora_node", "serve", "--checkpoint", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "data_dir" in result.stderr
    bad_port = subprocess.run(
        [sys.executable, "-m", "solora_node", "serve", "--checkpoint", ".", "--max-queue", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_port.returncode == 2 and "--max-queue" in bad_port.stderr, bad_port.stderr


def test_the_reference_expert_changes_the_output(reference: LoadedCheckpoint) -> None:
    """Guards the tests above: with random blocks every expert really differs from base."""
    batch = prompt_batch(reference.base.tokenizer, [QUESTION])
    so = reference.so
    with torch.no_grad():
        so.use_base()
        base = so.model(**batch).logits
        so.use_task("arith")
        assert (so.model(**batch).logits - base).abs().max() > 1e-2
