"""Errors in the OpenAI API's shape: {"error": {"message", "type", "param", "code"}} + status."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the API refuses; `status` is the HTTP status (4xx for the caller's mistakes)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def unknown_model(model: str, known: list[str]) -> ApiError:
    return ApiError(
        404,
        f"The model {model!r} does not exist; expected one of {known}",
        "model_not_found",
        "model",
    )


def queue_full(limit: int) -> ApiError:
    return ApiError(
        429,
        f"Too many requests in flight (limit {limit}); retry shortly",
        "rate_limit_exceeded",
        kind="rate_limit_error",
    )
