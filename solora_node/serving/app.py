"""The HTTP routes: GET /v1/models, POST /v1/completions and /v1/chat/completions (whole or
streamed as server-sent events), with OpenAI-shaped errors and a bounded request queue."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from solora_node.serving.engine import ExpertEngine, Outcome, Prompt
from solora_node.serving.errors import ApiError, queue_full
from solora_node.serving.responses import Reply, model_list
from solora_node.serving.schema import ChatRequest, CompletionRequest, parse_request

log = logging.getLogger(__name__)

# Far above any prompt that fits a small model's context; bounds what one request costs.
MAX_BODY_BYTES = 1 << 20


class Admission:
    """Requests in flight (running or waiting for the model); beyond the limit: 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0

    def enter(self) -> Callable[[], None]:
        """Take a place; returns its release (safe to call more than once)."""
        if self.pending >= self.limit:
            raise queue_full(self.limit)
        self.pending += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.pending -= 1

        return release


class Api:
    def __init__(self, engine: ExpertEngine, max_queue: int) -> None:
        self.engine = engine
        self.admission = Admission(max_queue)

    async def models(self, request: Request) -> Response:
        engine = self.engine
        return JSONResponse(model_list(engine.model_ids(), engine.held_tasks(), engine.round))

    async def completions(self, request: Request) -> Response:
        req: CompletionRequest = parse_request(CompletionRequest, await _json(request))
        self.engine.check_model(req.model)
        prompt = self.engine.completion_prompt(req.text)
        return await self._answer(req, prompt, req.max_tokens, chat=False)

    async def chat(self, request: Request) -> Response:
        req: ChatRequest = parse_request(ChatRequest, await _json(request))
        self.engine.check_model(req.model)
        messages = [(m.role if m.role != "developer" else "system", m.text) for m in req.messages]
        prompt = self.engine.chat_prompt(messages, req.last_user_text)
        return await self._answer(req, prompt, req.requested_tokens, chat=True)

    async def _answer(
        self, req: Any, prompt: Prompt, requested: int | None, *, chat: bool
    ) -> Response:
        max_new = self.engine.token_budget(prompt, requested)
        release = self.admission.enter()
        reply = Reply(chat=chat, model=req.model, round=self.engine.round)
        outcome = Outcome()
        options = {"temperature": req.temperature, "top_p": req.top_p, "stops": req.stops}
        if req.stream:
            events = self._events(req, prompt, max_new, reply, outcome, options, release)
            return EventSourceResponse(events, background=BackgroundTask(release))
        try:
            async with self.engine.lock:
                pieces = self.engine.stream(req.model, prompt, max_new, outcome, **options)
                text = "".join([piece async for piece in pieces])
        finally:
            release()
        return JSONResponse(reply.whole(text, outcome))

    async def _events(
        self,
        req: Any,
        prompt: Prompt,
        max_new: int,
        reply: Reply,
        outcome: Outcome,
        options: dict[str, Any],
        release: Callable[[], None],
    ) -> AsyncIterator[str]:
        try:
            async with self.engine.lock:
                started = False
                async for piece in self.engine.stream(
                    req.model, prompt, max_new, outcome, **options
                ):
                    if not started and reply.chat:
                        yield json.dumps(reply.role_chunk(outcome))
                    started = True
                    yield json.dumps(reply.chunk(piece, outcome))
            if not started and reply.chat:
                yield json.dumps(reply.role_chunk(outcome))
            yield json.dumps(reply.chunk(None, outcome, outcome.finish_reason))
            if req.include_usage:
                yield json.dumps(reply.usage_chunk(outcome))
            yield "[DONE]"
        except ApiError as err:  # the status line is gone: the error travels as an event
            yield json.dumps(err.body())
        except Exception:
            log.exception("streamed generation failed")
            yield json.dumps(ApiError(500, "generation failed", "internal_error").body())
        finally:
            release()


async def _json(request: Request) -> object:
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise _too_large()
    try:
        return json.loads(body)
    except ValueError:
        raise ApiError(
            400, "The request body is not valid JSON; expected a JSON object", "invalid_json"
        ) from None


def _too_large() -> ApiError:
    return ApiError(
        413, f"The request body is larger than {MAX_BODY_BYTES} bytes", "request_too_large"
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"Retry-After": "1"} if exc.status == 429 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    error = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code)
    return JSONResponse(error.body(), status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("request %s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    error = ApiError(500, "internal error; see the server's log", "internal_error")
    return JSONResponse(error.body(), status_code=500)


def create_app(engine: ExpertEngine, max_queue: int) -> Starlette:
    api = Api(engine, max_queue)
    app = Starlette(
        routes=[
            Route("/v1/models", api.models, methods=["GET"]),
            Route("/v1/completions", api.completions, methods=["POST"]),
            Route("/v1/chat/completions", api.chat, methods=["POST"]),
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.api = api  # its admission counter is what operators and tests look at
    return app
