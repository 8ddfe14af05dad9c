"""The router's typed errors; the server maps them to OpenAI errors in one place (server/errors.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from swiftserve.engine import errors as engine
from swiftserve.loader.model_kind import kind_model


class RouterError(Exception):
    """Base of the errors a request can get from the router."""


class UnknownModelError(RouterError, KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"the model {self.name!r} does not exist"


class WrongKindError(RouterError, ValueError):
    """A chat call to an embedding model, or the other way round."""

    def __init__(self, name: str, kind: str, wanted: str) -> None:
        super().__init__(f"the model {name!r} is {kind_model(kind)}; this call needs {kind_model(wanted)}")
        self.name, self.kind, self.wanted = name, kind, wanted


class ModelLoadError(RouterError):
    """The model failed to load; it is cold again and the next request retries."""

    def __init__(self, name: str, cause: str) -> None:
        super().__init__(f"the model {name!r} failed to load: {cause}")
        self.name, self.cause = name, cause


class ModelBusyError(RouterError):
    """An unload was asked while the model has requests in flight or is reserved."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the model {name!r} has requests in flight; retry once they finish")
        self.name = name


class PinnedModelError(RouterError):
    """A pinned (dedicated) model cannot be unloaded."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the model {name!r} is pinned and cannot be unloaded")
        self.name = name


class NoConfigFileError(RouterError):
    """A config reload was asked of a router that was not built from a config file."""

    def __init__(self) -> None:
        super().__init__("this server was not started with --config: there is no file to reload")


class LoadTimeoutError(RouterError, TimeoutError):
    """A request waited longer than its limit for memory to load its model."""

    def __init__(self, name: str, seconds: float, reason: str) -> None:
        super().__init__(f"the model {name!r} could not be loaded within {seconds:g} s: {reason}")
        self.name, self.seconds, self.reason = name, seconds, reason


class RouterClosedError(RouterError):
    """The router is shutting down."""


class InvalidParameterError(RouterError, ValueError):
    """A request parameter the model cannot serve (a sampling value out of range, an empty
    prompt, messages the chat template cannot render); `param` names it."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthError(RouterError, ValueError):
    """The prompt plus the completion budget does not fit the model's context. `param` is what to
    shorten: "max_tokens" when a requested budget overflows, else the prompt's own name."""

    def __init__(self, num_prompt_tokens: int, max_tokens: int, max_model_len: int, param: str) -> None:
        super().__init__(
            f"the model's maximum context length is {max_model_len} tokens; the request needs "
            f"{num_prompt_tokens + max_tokens} ({num_prompt_tokens} in the prompt, "
            f"{max_tokens} for the completion)"
        )
        self.num_prompt_tokens, self.max_tokens = num_prompt_tokens, max_tokens
        self.max_model_len = max_model_len
        self.param = param


class QueueFullError(RouterError):
    """The model's engine holds its maximum number of waiting requests; retry shortly."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the request queue of the model {name!r} is full; retry shortly")
        self.name = name


class RequestAbortedError(RouterError):
    """The engine ended the request early (finish reason "abort": shutdown or an engine failure)."""


class UnknownPipelineError(RouterError, KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"the pipeline {self.name!r} does not exist"


class PipelineStageError(RouterError):
    """A stage of a pipeline request failed; `cause` is the router error it met (its kind
    decides the answer's status), and the request's other stages were aborted."""

    def __init__(self, pipeline: str, stage: str, cause: RouterError) -> None:
        super().__init__(f"pipeline {pipeline!r}, stage {stage!r}: {cause}")
        self.pipeline, self.stage, self.cause = pipeline, stage, cause


def from_engine_error(exc: BaseException, name: str) -> BaseException:
    """The router's error for an engine's typed one (so callers catch one family); else `exc`."""
    if isinstance(exc, RouterError):
        return exc
    if isinstance(exc, engine.QueueFullError):
        return QueueFullError(name)
    if isinstance(exc, engine.ContextLengthError):
        return ContextLengthError(exc.num_prompt_tokens, exc.max_tokens, exc.max_model_len, "max_tokens")
    if isinstance(exc, ValueError):  # the engine's own checks of a request (token ids, sizes)
        return InvalidParameterError(None, str(exc))
    return exc


@contextlib.contextmanager
def engine_errors_as_router_errors(name: str) -> Iterator[None]:
    """Re-raises an engine's typed error of model `name` as the router's (from_engine_error)."""
    try:
        yield
    except Exception as exc:
        error = from_engine_error(exc, name)
        if error is exc:
            raise
        raise error from exc
