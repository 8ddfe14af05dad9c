"""The router's typed errors; the server maps them to OpenAI errors in one place (server/errors.py)."""

from __future__ import annotations


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
        super().__init__(f"the model {name!r} is a {kind} model; this call needs a {wanted} model")
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


class LoadTimeoutError(RouterError, TimeoutError):
    """A request waited longer than its limit for memory to load its model."""

    def __init__(self, name: str, seconds: float, reason: str) -> None:
        super().__init__(f"the model {name!r} could not be loaded within {seconds:g} s: {reason}")
        self.name, self.seconds, self.reason = name, seconds, reason


class RouterClosedError(RouterError):
    """The router is shutting down."""
