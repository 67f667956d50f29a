"""The daemon's API: a serving copy of the model that answers with the freshest experts.

The copy shares the frozen base weights with the training model (read-only, so both may
run at once) and owns its B blocks, routing codes and gate. After each round the node
hands over a snapshot (a clone of every B and code, taken under the learner's lock: the
only time training could wait); installing it waits for the request in progress, not
for training.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from solora_node.adapter.delta import block_tensors
from solora_node.adapter.model import SoLoraModel
from solora_node.config import ServingSection
from solora_node.serving.engine import ExpertEngine, ExpertSnapshot, RouteHook
from solora_node.serving.http import HttpServer
from solora_node.serving.service import make_engine, start_api

log = logging.getLogger(__name__)


class Learner(Protocol):
    """What serving needs of the node's learner (solora_node.learner.LocalLearner)."""

    so: SoLoraModel
    tokenizer: PreTrainedTokenizerBase
    lock: threading.Lock


def serving_copy(so: SoLoraModel) -> SoLoraModel:
    """A SoLoraModel over the same base weights (shared, not copied) with its own adapter."""
    adapter = {id(p) for layer in so.layers.values() for p in layer.lora_B.parameters(recurse=True)}
    shared = {id(p): p for p in so.model.parameters() if id(p) not in adapter}
    twin = copy.deepcopy(so, memo=dict(shared))
    for param in twin.model.parameters():
        param.requires_grad_(False)
    return twin


def snapshot(
    so: SoLoraModel, round_: int | None, held: frozenset[str] | None = None
) -> ExpertSnapshot:
    return ExpertSnapshot(
        blocks={t: block_tensors(so, t) for t in so.tasks},
        codes={t: {n: c.detach().clone() for n, c in per.items()} for t, per in so.codes.items()},
        round=round_,
        held=held,
    )


class LiveServing:
    """Started by the node when `serving.enabled`; `refresh` after every round."""

    def __init__(self, engine: ExpertEngine, server: HttpServer) -> None:
        self.engine = engine
        self.server = server
        self._latest: ExpertSnapshot | None = None
        self._installer: asyncio.Task[None] | None = None
        self.last_snapshot_s = 0.0  # how long training waited for the last snapshot

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    async def start(
        cls,
        settings: ServingSection,
        learner: Learner,
        round_: int,
        on_route: RouteHook | None = None,
    ) -> LiveServing:
        def make() -> tuple[SoLoraModel, PreTrainedTokenizerBase]:
            with learner.lock:
                # Its own tokenizer too: a fast tokenizer whose truncation settings the
                # trainer changes must not be shared across threads.
                return serving_copy(learner.so), copy.deepcopy(learner.tokenizer)

        twin, tokenizer = await asyncio.to_thread(make)
        engine = make_engine(twin, tokenizer, settings, round_, on_route)
        server = await start_api(engine, settings)
        log.info("serving the OpenAI-compatible API on http://%s:%d/v1", settings.host, server.port)
        return cls(engine, server)

    def refresh(self, learner: Learner, round_: int, held: frozenset[str] | None = None) -> None:
        """Take the round's experts now (`held`: the tasks whose expert the node holds, when
        capped); install them once no request is generating."""
        started = time.perf_counter()
        with learner.lock:
            self._latest = snapshot(learner.so, round_, held)
        self.last_snapshot_s = time.perf_counter() - started
        if self._installer is None or self._installer.done():
            self._installer = asyncio.create_task(self._install(), name="serving-swap")

    async def _install(self) -> None:
        while self._latest is not None:
            latest, self._latest = self._latest, None
            async with self.engine.lock:
                await asyncio.to_thread(self.engine.install, latest)
            log.debug("serving experts of round %s", latest.round)

    async def stop(self) -> None:
        await self.server.stop()
        if self._installer is not None:
            self._installer.cancel()
