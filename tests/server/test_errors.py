"""The one place typed errors meet HTTP: each router error's status, code and param."""

from __future__ import annotations

import pytest
from swiftserve.router import errors

from swiftserve.engine import errors as engine
from swiftserve.server.errors import from_exception


@pytest.mark.parametrize(
    ("exc", "status", "code", "param"),
    [
        (errors.UnknownModelError("m"), 404, "model_not_found", "model"),
        (errors.WrongKindError("m", "embedding", "chat"), 400, "model_not_supported", "model"),
        (errors.ContextLengthError(10, 20, 16, "max_tokens"), 400, "context_length_exceeded", "max_tokens"),
        (errors.InvalidParameterError("temperature", "temperature must be >= 0"), 400, None, "temperature"),
        (errors.QueueFullError("m"), 429, "queue_full", None),
        (errors.LoadTimeoutError("m", 5, "busy"), 503, "model_load_timeout", None),
        (errors.ModelLoadError("m", "boom"), 503, "model_load_failed", None),
        (errors.ModelBusyError("m"), 409, "model_busy", None),
        (errors.PinnedModelError("m"), 409, "model_pinned", None),
        (errors.RequestAbortedError("gone"), 503, "aborted", None),
        (errors.RouterClosedError("closing"), 503, "service_unavailable", None),
        (engine.QueueFullError("full"), 429, "queue_full", None),
    ],
)
def test_router_errors_map_to_openai_errors(exc, status, code, param):
    error = from_exception(exc, "m")
    assert (error.status, error.code, error.param) == (status, code, param)
    assert error.message


def test_context_length_names_the_limit_and_other_errors_are_not_mapped():
    error = from_exception(errors.ContextLengthError(10, 20, 16, "messages"), "m")
    assert "maximum context length is 16 tokens" in error.message and "30 tokens" in error.message
    assert from_exception(RuntimeError("a bug"), "m") is None  # answered 500 by the app
