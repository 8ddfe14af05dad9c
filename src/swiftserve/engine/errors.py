"""Errors that engines raise to their callers, one class per case: callers branch on the class,
never on the message. The router turns them into its own errors in one place (router/errors.py),
which the server maps to HTTP statuses.
"""

from __future__ import annotations


class InvalidRequestError(ValueError):
    """A request the engine cannot serve as given (an empty prompt, a token id outside the
    vocabulary, a request id in use); `param` names the part to fix (None: the request as a whole).
    A ValueError, so callers of the Python API that catch ValueError still do."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthError(InvalidRequestError):
    """The prompt plus the completion budget does not fit the model's context. `param` is what to
    shorten: "max_tokens" when a requested budget overflows, else the prompt's own name."""

    def __init__(self, num_prompt_tokens: int, max_tokens: int, max_model_len: int, param: str) -> None:
        super().__init__(
            param,
            f"the model's maximum context length is {max_model_len} tokens; the request needs "
            f"{num_prompt_tokens + max_tokens} ({num_prompt_tokens} in the prompt, "
            f"{max_tokens} for the completion)",
        )
        self.param: str = param  # always named here: what to shorten
        self.num_prompt_tokens = num_prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len


class GrammarError(InvalidRequestError):
    """A constraint (JSON schema, regex, choice, grammar) that cannot be served: invalid, using a
    keyword that cannot be enforced, matching nothing, or not compiled within its timeout.
    `param` names the request field it came from."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(param, message)
        self.message = message


class QueueFullError(RuntimeError):
    """The engine already holds its maximum number of waiting requests; retry later."""


class RequestFailedError(RuntimeError):
    """This request failed inside an engine step (say, its sampling raised); the other requests in
    that step went on. A server error, not the client's."""


class EngineDeadError(RuntimeError):
    """The engine was shut down, or a step failed, while the request was in flight."""


class ExecutorStoppedError(RuntimeError):
    """A command was sent to a device executor that is not running (it was stopped)."""


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
