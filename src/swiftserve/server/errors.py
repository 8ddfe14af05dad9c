"""OpenAI-format errors: one exception type carrying status, type, param and code.

Every error the server returns has the body `{"error": {"message", "type", "param", "code"}}`,
the shape the OpenAI SDKs parse into their exception classes (by HTTP status).
"""

from __future__ import annotations

import logging
import re

import msgspec

from swiftserve.router import errors as router
from swiftserve.router.errors import RouterError

logger = logging.getLogger("swiftserve.server")

_ENCODER = msgspec.json.Encoder()

# msgspec's ValidationError text, e.g. "Expected `int`, got `str` - at `$.messages[0].role`".
_AT_PATH = re.compile(r" - at `\$\.?(.*)`$")
_FIELD_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]*)`")


class APIError(Exception):
    """An error answered to the client as `status` with an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - the OpenAI field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return _ENCODER.encode(self.to_dict())


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or is not served here.",
        param="model",
        code="model_not_found",
    )


def context_length_exceeded(
    num_prompt_tokens: int, max_tokens: int, max_model_len: int, param: str
) -> APIError:
    return bad_request(
        f"This model's maximum context length is {max_model_len} tokens. However, you requested "
        f"{num_prompt_tokens + max_tokens} tokens ({num_prompt_tokens} in the prompt, {max_tokens} for the "
        f"completion). Please reduce the prompt or the completion length.",
        param=param,
        code="context_length_exceeded",
    )


# What a refused request is told to wait: the queue moves by whole requests, which take seconds.
QUEUE_FULL_RETRY_AFTER_S = 1


def queue_full(what: str, retry_after_s: int = QUEUE_FULL_RETRY_AFTER_S) -> APIError:
    """429 for a full queue; `what` says whose ("the request queue for model `m` is full")."""
    return APIError(
        429,
        f"{what[:1].upper()}{what[1:]}; retry after {retry_after_s} s.",
        type="rate_limit_error",
        code="queue_full",
        headers={"retry-after": str(retry_after_s)},
    )


def request_timeout(name: str, seconds: float) -> APIError:
    """504: the server received the whole request and gave up answering it within its timeout.
    (408 would say the client was too slow to send it, which invites an HTTP client to resend.)
    x-should-retry: false keeps the openai SDKs from retrying what would time out again."""
    return APIError(
        504,
        f"Request timed out: the request to `{name}` did not finish within its timeout of {seconds:g} s.",
        type="timeout_error",
        code="request_timeout",
        headers={"x-should-retry": "false"},
    )


def service_unavailable(message: str) -> APIError:
    return APIError(503, message, type="server_error", code="service_unavailable")


def from_validation_error(exc: msgspec.ValidationError) -> APIError:
    """Turns msgspec's message into a 400 whose `param` is the offending field's path."""
    text = str(exc)
    path_match = _AT_PATH.search(text)
    path = path_match.group(1) if path_match else ""
    field_match = _FIELD_NAMED.search(text)
    if field_match:
        name = field_match.group(1)
        param = f"{path}.{name}" if path else name
    else:
        param = path or None
    if text.startswith("Object contains unknown field"):
        return bad_request(
            f"Unrecognized request argument supplied: {param}", param=param, code="unknown_field"
        )
    if text.startswith("Object missing required field"):
        return bad_request(
            f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    if param is None:
        return bad_request(f"Invalid request body: {text}", code="invalid_value")
    return bad_request(f"Invalid value for '{param}': {_strip_at(text)}", param=param, code="invalid_value")


def _strip_at(text: str) -> str:
    return _AT_PATH.sub("", text)


def error_for(exc: BaseException, model: str, where: str = "a request") -> APIError:
    """The HTTP answer to an exception raised while serving `where` (for the log) for `model`:
    the one place where errors meet HTTP statuses. An APIError is answered as it is and a router
    error by its class (the router turned every lower layer's typed error into one:
    router/errors.py); anything else is a bug, answered 500 and logged here, once, with its
    traceback."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RouterError):
        return _router_error(exc, model)
    logger.error("unexpected error in %s (model %r)", where, model, exc_info=exc)
    return APIError(500, "Internal server error.", type="server_error")


def _router_error(exc: RouterError, model: str) -> APIError:
    """One status and code per router error class (tests/server/test_errors.py checks them all)."""
    if isinstance(exc, router.PipelineStageError):
        # Answered as the stage's own error would be, the message naming the pipeline and stage.
        inner = _router_error(exc.cause, model)
        where = f"Pipeline {exc.pipeline!r}, stage {exc.stage!r}: "
        return APIError(inner.status, where + inner.message, type=inner.type, param=inner.param,
                        code=inner.code, headers=inner.headers)  # fmt: skip
    if isinstance(exc, router.UnknownPipelineError):
        return model_not_found(exc.name)
    if isinstance(exc, router.ContextLengthExceededError):
        return context_length_exceeded(exc.num_prompt_tokens, exc.max_tokens, exc.max_model_len, exc.param)
    if isinstance(exc, router.InvalidParameterError):
        return bad_request(str(exc), param=exc.param)
    if isinstance(exc, router.ModelQueueFullError):
        return queue_full(f"the server's request queue for model `{exc.name}` is full")
    if isinstance(exc, router.PipelineQueueFullError):
        return queue_full(f"the pipeline `{exc.name}` has its maximum of {exc.max_queue} requests in flight")
    if isinstance(exc, router.RequestTimeoutError):
        return request_timeout(exc.name, exc.seconds)
    if isinstance(exc, router.ModelNotFoundError):
        return model_not_found(exc.name)
    if isinstance(exc, router.RequestAbortedError):
        # A shutdown (or a dead engine) ended it: unavailable now, not a server bug.
        message = "The request was aborted: the server is shutting down or stopped its model."
        return APIError(503, message, type="server_error", code="aborted")
    message = _sentence(str(exc))
    if isinstance(exc, router.WrongKindError):
        return APIError(400, message, param="model", code="model_not_supported")
    if isinstance(exc, router.InvalidConfigError):
        return APIError(400, message, code="invalid_config")
    if isinstance(exc, router.NoConfigFileError):
        return APIError(400, message, code="no_config_file")
    if isinstance(exc, router.ModelBusyError):
        return APIError(409, message, code="model_busy")
    if isinstance(exc, router.ModelPinnedError):
        return APIError(409, message, code="model_pinned")
    if isinstance(exc, router.LoadTimeoutError):
        return APIError(
            503, message, type="server_error", code="model_load_timeout", headers={"retry-after": "5"}
        )
    if isinstance(exc, router.ModelLoadError):
        return APIError(503, message, type="server_error", code="model_load_failed")
    if isinstance(exc, router.GenerationFailedError):
        return APIError(500, f"Generation failed: {exc}", type="server_error", code="generation_failed")
    if isinstance(exc, router.StageOutputError):
        return APIError(502, message, type="server_error", code="stage_output_invalid")
    if isinstance(exc, router.RouterClosedError):
        return service_unavailable(message)
    # A router error this table does not know yet: unavailable, not a client error (and logged,
    # so that the table gets its entry).
    logger.error("no HTTP answer for %s; answering 503", type(exc).__name__)
    return service_unavailable(message)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."
