"""Put an engine behind the HTTP API with the settings of the `serving` config section."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from solora_node.adapter.model import SoLoraModel
from solora_node.config import ServingSection
from solora_node.serving.app import create_app
from solora_node.serving.engine import ExpertEngine, RouteHook
from solora_node.serving.http import HttpServer


def make_engine(
    so: SoLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: ServingSection,
    round_: int | None = None,
    on_route: RouteHook | None = None,
) -> ExpertEngine:
    return ExpertEngine(
        so,
        tokenizer,
        router=settings.router,
        max_tokens=settings.max_tokens,
        default_max_tokens=min(settings.default_max_tokens, settings.max_tokens),
        round_=round_,
        on_route=on_route,
    )


async def start_api(engine: ExpertEngine, settings: ServingSection) -> HttpServer:
    """Bind and serve in the running loop; the returned server's `port` is the bound one."""
    server = HttpServer(create_app(engine, settings.max_queue), settings.host, settings.port)
    await server.start()
    return server
