"""The router's typed errors, and the one place where the lower layers' errors become them.

Every error a request gets from the router is a RouterError; the server maps those, and only
those, to OpenAI errors (server/errors.py). An error of the engine, the ledger or the loader is
turned into the router's by its type in `as_router_error`, the one table of that mapping, which
`router_errors` applies around a whole request: a generate stream from its first output to its
last, an embed call, a config reload. Where a lower layer already names the concept (the engine's
ContextLengthError, the ledger's UnknownModelError, ...), the router's error subclasses it under a
name of its own, so `except` on either layer's class catches it and no class is defined twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from swiftserve.router.config_file import ConfigError
from swiftserve.scheduler import residency_types as ledger

from swiftserve.engine import errors as engine
from swiftserve.loader.aliases import ModelFetchError
from swiftserve.loader.model_kind import kind_model
from swiftserve.loader.model_source import WrongModelKindError
from swiftserve.loader.resolve import UnknownSourceError
from swiftserve.loader.snapshot_errors import SnapshotError


class RouterError(Exception):
    """Base of the errors a request can get from the router."""


# -- the client's request ---------------------------------------------------------------------------
class ModelNotFoundError(RouterError, ledger.UnknownModelError):
    """A model name that is not served here."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the model {name!r} does not exist")
        self.name = name


class WrongKindError(RouterError, ValueError):
    """A chat call to an embedding model, or the other way round. (The loader's WrongModelKindError
    is another case: a model built as the wrong kind, which fails its load.)"""

    def __init__(self, name: str, kind: str, wanted: str) -> None:
        super().__init__(f"the model {name!r} is {kind_model(kind)}; this call needs {kind_model(wanted)}")
        self.name, self.kind, self.wanted = name, kind, wanted


class InvalidParameterError(RouterError, engine.InvalidRequestError):
    """A request parameter the model cannot serve (a sampling value out of range, an empty
    prompt, messages the chat template cannot render); `param` names it."""


class ContextLengthExceededError(RouterError, engine.ContextLengthError):
    """The prompt plus the completion budget does not fit the model's context (the router's own
    check, or the engine's)."""


class InvalidConfigError(RouterError, ValueError):
    """A config reload refused: the file is invalid, or its models could never fit the budget.
    Nothing of it was applied."""


class NoConfigFileError(RouterError):
    """A config reload was asked of a router that was not built from a config file."""

    def __init__(self) -> None:
        super().__init__("this server was not started with --config: there is no file to reload")


# -- the model's state ------------------------------------------------------------------------------
class ModelQueueFullError(RouterError, engine.QueueFullError):
    """The model's engine holds its maximum number of waiting requests; retry shortly."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the request queue of the model {name!r} is full; retry shortly")
        self.name = name


class PipelineQueueFullError(RouterError):
    """The pipeline has its maximum number of requests in flight (its max_queue); retry shortly.
    Refused at arrival, before any stage ran or any model was held."""

    def __init__(self, name: str, max_queue: int) -> None:
        super().__init__(
            f"the pipeline {name!r} has its maximum of {max_queue} requests in flight; retry shortly"
        )
        self.name, self.max_queue = name, max_queue


class ModelBusyError(RouterError):
    """An unload was asked while the model has requests in flight or is reserved."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the model {name!r} has requests in flight; retry once they finish")
        self.name = name


class ModelPinnedError(RouterError, ledger.PinnedModelError):
    """A pinned (dedicated) model cannot be unloaded."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the model {name!r} is pinned and cannot be unloaded")
        self.name = name


class ModelLoadError(RouterError):
    """The model failed to load (unreadable or corrupt files, a failed build); it is cold again and
    the next request retries. name is None when a config reload failed before naming one."""

    def __init__(self, name: str | None, cause: str) -> None:
        which = f"the model {name!r}" if name is not None else "a model of the config file"
        super().__init__(f"{which} failed to load: {cause}")
        self.name, self.cause = name, cause


class LoadTimeoutError(RouterError, TimeoutError):
    """A request waited longer than its limit for memory to load its model."""

    def __init__(self, name: str, seconds: float, reason: str) -> None:
        super().__init__(f"the model {name!r} could not be loaded within {seconds:g} s: {reason}")
        self.name, self.seconds, self.reason = name, seconds, reason


# -- the request's end ------------------------------------------------------------------------------
class RouterClosedError(RouterError):
    """The router is shutting down."""


class RequestAbortedError(RouterError):
    """The request ended early: a shutdown, an engine failure or an unload stopped its model."""


class RequestTimeoutError(RouterError, TimeoutError):
    """The request ran past its `timeout` (the client's, else the server's default), counted from
    its arrival; it was ended there, in every stage, and everything it held was let go.
    `name` is the model or pipeline it called."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"the request to {name!r} did not finish within its timeout of {seconds:g} s")
        self.name, self.seconds = name, seconds


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


class StageOutputError(RouterError):
    """A pipeline stage's output is not what its structured_outputs promise the stages after it
    (a JSON reply cut short by max_tokens): the pipeline's configuration, not the client's."""


class GenerationFailedError(RouterError, engine.RequestFailedError):
    """The request failed inside an engine step or forward (the others in it went on): a server
    error, not the client's."""


def as_router_error(exc: Exception, name: str | None) -> Exception:
    """The router's error for a typed error of a lower layer raised for model `name` (None: not
    one model's, a config reload); `exc` itself when it is a router error already, or untyped (a
    bug, which the server answers 500 and logs). Matched by class only, most specific first."""
    if isinstance(exc, RouterError):
        return exc
    if isinstance(exc, engine.ContextLengthError):
        return ContextLengthExceededError(exc.num_prompt_tokens, exc.max_tokens, exc.max_model_len, exc.param)
    if isinstance(exc, engine.InvalidRequestError):
        return InvalidParameterError(exc.param, str(exc))
    if isinstance(exc, engine.QueueFullError) and name is not None:
        return ModelQueueFullError(name)
    if isinstance(exc, engine.RequestFailedError):
        return GenerationFailedError(str(exc))
    if isinstance(exc, engine.ModelInUseError):
        return ModelBusyError(exc.name)
    if isinstance(exc, (engine.EngineDeadError, engine.ExecutorStoppedError, engine.ModelNotLoadedError)):
        return RequestAbortedError(f"the model stopped serving the request: {exc}")
    if isinstance(exc, (SnapshotError, ModelFetchError, WrongModelKindError)):
        return ModelLoadError(name, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, (ConfigError, UnknownSourceError, ledger.BudgetError, ledger.DuplicateModelError)):
        return InvalidConfigError(str(exc))
    return exc


@contextlib.contextmanager
def router_errors(name: str | None) -> Iterator[None]:
    """Re-raises a lower layer's typed error inside the block as the router's (as_router_error),
    chained to it. Wrap an async generator's whole loop in it: a stream's later outputs are
    mapped as its first one is."""
    try:
        yield
    except Exception as exc:
        error = as_router_error(exc, name)
        if error is exc:
            raise
        raise error from exc
