"""Response bodies in the OpenAI API's shapes (whole answers and streamed chunks), plus the
extra `solora` field that says which expert answered and the gate's weights."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from solora_node.serving.engine import Outcome


@dataclass
class Reply:
    """One request's identity: the same id and timestamp on every streamed chunk."""

    chat: bool
    model: str
    round: int | None
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, outcome: Outcome) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": outcome.finish_reason}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice.update(text=text, logprobs=None)
        return {
            **self._head(self.object),
            "choices": [choice],
            "usage": outcome.usage(),
            "solora": outcome.solora(self.round),
        }

    def chunk(self, text: str | None, outcome: Outcome, finish: str | None = None) -> dict:
        """A streamed piece; the first chat chunk carries the role, the last the finish."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice.update(text=text or "", logprobs=None)
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [choice], "solora": outcome.solora(self.round)}

    def role_chunk(self, outcome: Outcome) -> dict[str, Any]:
        chunk = self.chunk(None, outcome)
        chunk["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return chunk

    def usage_chunk(self, outcome: Outcome) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": outcome.usage()}


def model_list(models: list[str], held: list[str], round_: int | None) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "solora-node",
                # auto routes among the held experts; a task not held yet answers as the base
                "solora": {"held": name == "auto" or name in held, "round": round_},
            }
            for name in models
        ],
    }
