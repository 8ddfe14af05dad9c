"""Errors that engines raise to their callers (the server maps them to HTTP statuses)."""

from __future__ import annotations


class RequestFailedError(RuntimeError):
    """This request failed inside an engine step (say, its sampling raised); the other requests in
    that step went on. A server error (HTTP 500), not the client's."""


class ContextLengthError(ValueError):
    """The prompt, or the prompt plus max_tokens, does not fit the model's context (HTTP 400,
    code context_length_exceeded)."""

    def __init__(self, message: str, num_prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
        super().__init__(message)
        self.num_prompt_tokens = num_prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len


class QueueFullError(RuntimeError):
    """The engine already holds its maximum number of waiting requests; retry later (HTTP 429/503)."""


class ModelNotLoadedError(RuntimeError):
    """generate()/embed() on a cold served model: the router loads it first (engine/served_model.py)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the model {name!r} is not loaded; load() it first")
        self.name = name


class ModelInUseError(RuntimeError):
    """unload() while requests are in flight; retry once they finish (the router waits for them)."""

    def __init__(self, name: str, num_in_flight: int) -> None:
        super().__init__(f"the model {name!r} has {num_in_flight} requests in flight; not unloading")
        self.name = name
        self.num_in_flight = num_in_flight
