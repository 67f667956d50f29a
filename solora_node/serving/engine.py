"""One model answering API requests: render the prompt, set the expert gate (a task, or `auto`
through the implicit MoE router), and stream the generated text.

The gate is state of the model, so requests take turns: `lock` (an asyncio lock, so that a
waiting request holds no thread) is held from routing to the last token, and while the
daemon swaps fresher experts in.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import (
    AsyncTextIteratorStreamer,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from solora_node.adapter.delta import set_block_tensors
from solora_node.adapter.errors import AdapterError
from solora_node.adapter.model import SoLoraModel
from solora_node.adapter.prompts import format_prompt, prompt_batch
from solora_node.adapter.routing import route
from solora_node.serving.errors import ApiError, unknown_model
from solora_node.serving.stops import StopCutter

AUTO = "auto"
Router = Literal["top1", "soft"]


@dataclass(frozen=True)
class Prompt:
    ids: list[int]  # fed to the model verbatim
    route_text: str  # what `auto` routes on (the question, in the trainer's format)


@dataclass
class Outcome:
    """Filled while a generation runs: the gate before the first piece, the rest at the end."""

    expert: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    router: str = ""
    wanted: str = ""  # the task `auto` chose when the node does not hold its expert yet
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def solora(self, round_: int | None) -> dict[str, Any]:
        """The response's extra field: which expert answered, and the gate's weights."""
        extra: dict[str, Any] = {
            "expert": self.expert,
            "gate": self.weights,
            "router": self.router,
            "round": round_,
        }
        if self.wanted:
            extra["wanted"] = self.wanted
        return extra

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True)
class ExpertSnapshot:
    """Every task's B and routing codes at one round, copied out of a training model."""

    blocks: Mapping[str, Mapping[str, torch.Tensor]]
    codes: Mapping[str, Mapping[str, torch.Tensor]]
    round: int | None
    # Tasks whose expert the node holds when it holds only some (a capped daemon); None: all.
    held: frozenset[str] | None = None


# Told of every prompt `auto` routes: the task chosen and whether its expert is held.
RouteHook = Callable[[str, bool], None]


def _no_routing(reason: str) -> ApiError:
    """`auto` cannot route yet (no codes held); a task name still works."""
    return ApiError(
        503, f"{reason}; ask for a task by name", "routing_unavailable", "model", "server_error"
    )


class _Watch(StoppingCriteria):
    """Counts generated tokens and stops generation when asked (stop string, disconnect)."""

    def __init__(self, prompt_tokens: int) -> None:
        self.stop = threading.Event()
        self.prompt_tokens = prompt_tokens
        self.length = prompt_tokens

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        self.length = int(input_ids.shape[1])
        return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool)


class ExpertEngine:
    def __init__(
        self,
        so: SoLoraModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        router: Router = "top1",
        max_tokens: int = 256,
        default_max_tokens: int = 64,
        round_: int | None = None,
        on_route: RouteHook | None = None,
    ) -> None:
        self.so = so
        self.on_route = on_route
        self.held: frozenset[str] | None = None  # experts held, when a daemon holds only some
        self.tokenizer = tokenizer
        self.router = router
        self.max_tokens = max_tokens
        self.default_max_tokens = default_max_tokens
        self.round = round_
        self.lock = asyncio.Lock()
        self.context = int(getattr(so.model.config, "max_position_embeddings", 2048))
        so.model.eval()

    # ------------------------------------------------------------------ models
    def model_ids(self) -> list[str]:
        return [*self.so.tasks, AUTO]

    def check_model(self, model: str) -> None:
        if model not in self.model_ids():
            raise unknown_model(model, self.model_ids())
        if model == AUTO and not self.so.codes:  # said before a stream starts, with a status
            raise _no_routing(f"{AUTO} needs routing codes; none are held yet")

    def held_tasks(self) -> list[str]:
        """Tasks whose expert is nonzero (a node has not received every task's block yet)."""
        return [
            t
            for t in self.so.tasks
            if any(bool(layer.lora_B[t].any()) for layer in self.so.layers.values())
        ]

    def install(self, snapshot: ExpertSnapshot) -> None:
        """Swap in fresher experts; call with `lock` held (no request is mid-generation)."""
        for task, tensors in snapshot.blocks.items():
            set_block_tensors(self.so, task, tensors)
        self.so.codes = {t: dict(per_layer) for t, per_layer in snapshot.codes.items()}
        self.round = snapshot.round
        self.held = snapshot.held

    # ------------------------------------------------------------------ prompts
    def completion_prompt(self, text: str) -> Prompt:
        """A completion continues the text as given (no template), like any completions API."""
        return Prompt(self._encode(text), text)

    def chat_prompt(self, messages: Sequence[tuple[str, str]], question: str) -> Prompt:
        """The model's chat template; a lone user turn is rendered exactly like in training."""
        if len(messages) == 1 and messages[0][0] == "user":
            rendered = format_prompt(self.tokenizer, messages[0][1])
        elif getattr(self.tokenizer, "chat_template", None):
            try:
                rendered = str(
                    self.tokenizer.apply_chat_template(
                        [{"role": r, "content": c} for r, c in messages],
                        tokenize=False,
                        add_generation_prompt=True,
                    )
                )
            except Exception as exc:  # templates raise their own errors (e.g. on roles)
                raise ApiError(
                    400,
                    f"messages: the model's chat template refused them ({exc})",
                    "invalid_value",
                    "messages",
                ) from None
        else:
            rendered = "".join(f"{r}: {c}\n" for r, c in messages) + "assistant: "
        return Prompt(self._encode(rendered), question)

    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def token_budget(self, prompt: Prompt, requested: int | None) -> int:
        """max_tokens for this request; 400 when it exceeds the limit or the context window."""
        wanted = self.default_max_tokens if requested is None else requested
        if wanted > self.max_tokens:
            raise ApiError(
                400,
                f"max_tokens is {wanted}; this server allows at most {self.max_tokens}",
                "invalid_value",
                "max_tokens",
            )
        if not prompt.ids:
            raise ApiError(400, "The prompt is empty", "invalid_value", "prompt")
        if len(prompt.ids) + wanted > self.context:
            raise ApiError(
                400,
                f"This model's maximum context length is {self.context} tokens; the prompt has "
                f"{len(prompt.ids)} and max_tokens asks for {wanted} more",
                "context_length_exceeded",
                "messages",
            )
        return wanted

    # ------------------------------------------------------------------ generation
    def _set_gate(self, model: str, prompt: Prompt, outcome: Outcome) -> None:
        if model != AUTO:
            self.so.use_task(model)
            outcome.expert, outcome.router = model, "fixed"
            outcome.weights = {t: float(t == model) for t in self.so.tasks}
            return
        try:
            weights = route(self.so, prompt_batch(self.tokenizer, [prompt.route_text]))[0]
        except AdapterError as err:
            raise _no_routing(str(err)) from None
        best = self.so.tasks[int(weights.argmax())]
        held = self.held
        if self.on_route is not None:
            self.on_route(best, held is None or best in held)
        if held is not None and best not in held and any(t in held for t in self.so.tasks):
            # Not held yet (it is wanted from the next exchange): the best held one answers.
            keep = torch.tensor([t in held for t in self.so.tasks], dtype=weights.dtype)
            weights = weights * keep
            weights = weights / weights.sum() if float(weights.sum()) > 0 else keep / keep.sum()
            outcome.wanted, best = best, self.so.tasks[int(weights.argmax())]
        if self.router == "top1":
            self.so.use_task(best)
        else:
            self.so.use_weights(weights)
        outcome.expert, outcome.router = best, self.router
        outcome.weights = {
            t: round(float(w), 6) for t, w in zip(self.so.tasks, weights, strict=True)
        }

    def _generate(
        self,
        prompt: Prompt,
        max_new: int,
        sampling: dict[str, Any],
        streamer: AsyncTextIteratorStreamer,
        watch: _Watch,
    ) -> None:
        ids = torch.tensor([prompt.ids], dtype=torch.long)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        try:
            with torch.no_grad():
                self.so.model.generate(  # type: ignore[operator]
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([watch]),
                    pad_token_id=pad,
                    **sampling,
                )
        except BaseException:
            streamer.end()  # the consumer must not wait for text that will never come
            raise

    async def stream(
        self,
        model: str,
        prompt: Prompt,
        max_new: int,
        outcome: Outcome,
        temperature: float | None = None,
        top_p: float | None = None,
        stops: list[str] | None = None,
    ) -> AsyncIterator[str]:
        """Text pieces as they are generated; call with `lock` held. `outcome` says the
        gate before the first piece and the finish reason and token counts at the end."""
        outcome.prompt_tokens = len(prompt.ids)
        await asyncio.to_thread(self._set_gate, model, prompt, outcome)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature:  # None or 0: greedy, the reproducible default
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p or 1.0}
        streamer = AsyncTextIteratorStreamer(
            self.tokenizer,  # type: ignore[arg-type]
            skip_prompt=True,
            skip_special_tokens=True,
        )
        watch = _Watch(len(prompt.ids))
        cutter = StopCutter(stops or [])
        worker = asyncio.ensure_future(
            asyncio.to_thread(self._generate, prompt, max_new, sampling, streamer, watch)
        )
        try:
            async for piece in streamer:
                text = cutter.feed(piece)
                if cutter.hit:
                    watch.stop.set()
                if text:
                    yield text
                if cutter.hit:
                    break
            else:
                tail = cutter.flush()
                if tail:
                    yield tail
        finally:
            # A disconnected client or a stop string: end generation before the next turn.
            watch.stop.set()
            await asyncio.wait({worker})
        worker.result()  # a failure inside generate surfaces here
        outcome.completion_tokens = watch.length - watch.prompt_tokens
        hit_limit = outcome.completion_tokens >= max_new
        outcome.finish_reason = "length" if hit_limit and not cutter.hit else "stop"
