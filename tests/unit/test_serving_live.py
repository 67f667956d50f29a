"""The serving side of a node: a bounded queue (429 beyond it) and fresher experts swapped
into a serving copy that shares the base weights but never touches the training model."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest
import torch

from solora_node.adapter import set_block_tensors
from solora_node.adapter.checkpoint import load_checkpoint
from solora_node.adapter.inference import answer
from solora_node.config import ConfigError, ServingSection
from solora_node.serving.app import Admission
from solora_node.serving.errors import ApiError
from solora_node.serving.http import ServingError, bind
from solora_node.serving.live import LiveServing
from solora_node.serving.service import make_engine
from solora_node.serving.stops import StopCutter
from tests.unit.serving_harness import InProcessApi, LoopThread, wait_for
from tests.unit.tiny_checkpoint import write_tiny_checkpoint

CHAT = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("live") / "adapter", round_=4)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)


def test_requests_beyond_the_queue_limit_get_429(checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(checkpoint, tmp_path)
    engine = make_engine(loaded.so, loaded.base.tokenizer, ServingSection())
    api = InProcessApi(engine, max_queue=2)
    held, release = threading.Event(), asyncio.Event()

    async def occupy_the_model() -> None:
        async with engine.lock:
            held.set()
            await release.wait()

    blocker = asyncio.run_coroutine_threadsafe(occupy_the_model(), api.runner.loop)
    client = _client(api.url)
    try:
        wait_for(held.is_set, 10, "the test to hold the model")
        with ThreadPoolExecutor(2) as pool:
            waiting = [
                pool.submit(
                    client.chat.completions.create, model="arith", messages=CHAT, max_tokens=3
                )
                for _ in range(2)
            ]
            wait_for(lambda: _pending(api) == 2, 20, "two queued requests")
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="arith", messages=CHAT, max_tokens=3)
            assert refused.value.response.headers.get("retry-after") == "1"
            assert refused.value.code == "rate_limit_exceeded"
            api.runner.loop.call_soon_threadsafe(release.set)
            replies = [f.result(timeout=60) for f in waiting]
        assert all(r.choices[0].message.content is not None for r in replies)
        assert _pending(api) == 0
        client.chat.completions.create(model="arith", messages=CHAT, max_tokens=3)  # room again
    finally:
        api.runner.loop.call_soon_threadsafe(release.set)
        blocker.result(timeout=10)
        api.close()


def _pending(api: InProcessApi) -> int:
    return int(api.server.app.state.api.admission.pending)


def test_admission_releases_each_place_once() -> None:
    admission = Admission(1)
    release = admission.enter()
    with pytest.raises(ApiError) as full:
        admission.enter()
    assert full.value.status == 429
    release()
    release()  # idempotent: a stream's generator and its background task both call it
    assert admission.pending == 0
    admission.enter()


def test_stop_cutter_never_sends_part_of_a_stop() -> None:
    cutter = StopCutter(["END"])
    sent = [cutter.feed(p) for p in ("abc E", "N", "D tail")]
    assert "".join(sent) == "abc " and cutter.hit and cutter.flush() == ""
    free = StopCutter(["xyz"])
    assert free.feed("hello x") + free.flush() == "hello x"


def test_daemon_serving_swaps_in_fresher_experts_without_touching_training(
    checkpoint: Path, tmp_path: Path
) -> None:
    loaded = load_checkpoint(checkpoint, tmp_path)
    learner = SimpleNamespace(so=loaded.so, tokenizer=loaded.base.tokenizer, lock=threading.Lock())
    learner.so.train_task("arith")  # the training model's gate, which serving must not move
    runner = LoopThread()
    settings = ServingSection(enabled=True, port=0)
    live: LiveServing = runner.call(LiveServing.start(settings, learner, 4))  # type: ignore[arg-type]
    client = _client(f"http://127.0.0.1:{live.port}/v1")
    try:
        twin = live.engine.so
        base_params = dict(loaded.so.model.named_parameters())
        for name, param in twin.model.named_parameters():
            shared = param is base_params[name]
            assert shared == ("lora_B" not in name), name  # base shared, adapter owned

        first = client.chat.completions.create(model="lang", messages=CHAT, max_tokens=8)
        assert first.model_extra["solora"]["round"] == 4
        assert learner.so.gate.describe() == {"mode": "task", "task": "arith"}

        generator = torch.Generator().manual_seed(5)
        fresher = {
            n: 3 * torch.randn(s, generator=generator) for n, s in learner.so.block_shapes().items()
        }
        with learner.lock:
            set_block_tensors(learner.so, "lang", fresher)

        async def refresh() -> None:
            live.refresh(learner, 5)  # type: ignore[arg-type]

        runner.call(refresh())
        wait_for(lambda: live.engine.round == 5, 30, "the round-5 experts")
        assert live.last_snapshot_s < 1.0  # training waits only for the copy
        second = client.chat.completions.create(model="lang", messages=CHAT, max_tokens=8)
        assert second.model_extra["solora"]["round"] == 5
        expected = answer(
            learner.so, learner.tokenizer, CHAT[0]["content"], "lang", max_new_tokens=8
        )
        assert second.choices[0].message.content.strip() == expected.text
        assert second.choices[0].message.content != first.choices[0].message.content
    finally:
        runner.call(live.stop())
        runner.close()


def test_serving_is_off_and_on_loopback_by_default() -> None:
    from solora_node.config import load_config

    cfg = load_config(None, ["network.insecure=true"], environ={})
    assert cfg.serving.enabled is False and cfg.serving.host == "127.0.0.1"
    with pytest.raises(ConfigError) as bad:
        load_config(None, ["network.insecure=true", "serving.max_queue=0"], environ={})
    assert str(bad.value).startswith("--set serving.max_queue: serving.max_queue = 0:")


def test_a_taken_port_is_a_one_line_error() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ServingError) as err:
            bind("127.0.0.1", taken.getsockname()[1])
        assert "expected a free port" in str(err.value) and "\n" not in str(err.value)
    finally:
        taken.close()


def test_auto_without_routing_codes_is_refused_before_streaming(
    checkpoint: Path, tmp_path: Path
) -> None:
    loaded = load_checkpoint(checkpoint, tmp_path)
    loaded.so.codes = {}  # a fresh node before any routing code arrived
    api = InProcessApi(make_engine(loaded.so, loaded.base.tokenizer, ServingSection()))
    client = _client(api.url)
    try:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="auto", messages=CHAT, stream=stream)
            assert refused.value.status_code == 503
            assert refused.value.code == "routing_unavailable"
        reply = client.chat.completions.create(model="rev", messages=CHAT, max_tokens=2)
        assert reply.model_extra["solora"]["expert"] == "rev"
    finally:
        api.close()
