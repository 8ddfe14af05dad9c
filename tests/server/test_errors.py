"""The one place errors meet HTTP (server/errors.error_for), and the one place the lower layers'
errors become the router's (router/errors.as_router_error): every router error and every engine
error has exactly one status and code; a corrupt snapshot is a 503, never a 400 "invalid
parameter"; anything untyped is a 500, logged once."""

from __future__ import annotations

import asyncio
import inspect
import logging

import httpx
import pytest
from swiftserve.router import errors
from swiftserve.router.config_file import ConfigError
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router
from swiftserve.scheduler import residency_types as ledger

from swiftserve.engine import errors as engine
from swiftserve.loader.aliases import ModelFetchError
from swiftserve.loader.model_source import WrongModelKindError
from swiftserve.loader.resolve import UnknownSourceError
from swiftserve.loader.snapshot_errors import SnapshotChecksumError, SnapshotCorruptError, SnapshotError
from swiftserve.server.app import App
from swiftserve.server.errors import error_for

from .server_fakes import FakeChatEngine, FakeEmbeddingEngine, FakeServed

ROUTER_ERRORS = [
    (errors.ModelNotFoundError("m"), 404, "model_not_found", "model"),
    (errors.WrongKindError("m", "embedding", "chat"), 400, "model_not_supported", "model"),
    (
        errors.ContextLengthExceededError(10, 20, 16, "max_tokens"),
        400,
        "context_length_exceeded",
        "max_tokens",
    ),
    (errors.InvalidParameterError("temperature", "temperature must be >= 0"), 400, None, "temperature"),
    (errors.InvalidConfigError("models[0].colour: unknown key"), 400, "invalid_config", None),
    (errors.NoConfigFileError(), 400, "no_config_file", None),
    (errors.ModelQueueFullError("m"), 429, "queue_full", None),
    (errors.PipelineQueueFullError("p", 2), 429, "queue_full", None),
    (errors.RequestTimeoutError("m", 2.5), 504, "request_timeout", None),
    (errors.ModelBusyError("m"), 409, "model_busy", None),
    (errors.ModelPinnedError("m"), 409, "model_pinned", None),
    (errors.LoadTimeoutError("m", 5, "busy"), 503, "model_load_timeout", None),
    (errors.ModelLoadError("m", "boom"), 503, "model_load_failed", None),
    (errors.RequestAbortedError("gone"), 503, "aborted", None),
    (errors.RouterClosedError("closing"), 503, "service_unavailable", None),
    (errors.GenerationFailedError("sampling raised"), 500, "generation_failed", None),
    (errors.UnknownPipelineError("p"), 404, "model_not_found", "model"),
    (errors.StageOutputError("the output is not complete JSON"), 502, "stage_output_invalid", None),
    # A stage's error answers as its cause does (the message names the pipeline and stage).
    (errors.PipelineStageError("p", "s", errors.ModelLoadError("m", "boom")), 503, "model_load_failed", None),
]

# Every error class of engine/errors.py: what a request that met it is answered.
ENGINE_ERRORS = {
    engine.InvalidRequestError: (engine.InvalidRequestError("prompt", "prompt is empty"), 400, None),
    engine.GrammarError: (engine.GrammarError("response_format", "uniqueItems: not enforced"), 400, None),
    engine.ContextLengthError: (
        engine.ContextLengthError(10, 20, 16, "max_tokens"),
        400,
        "context_length_exceeded",
    ),
    engine.QueueFullError: (engine.QueueFullError("full"), 429, "queue_full"),
    engine.RequestFailedError: (engine.RequestFailedError("sampling raised"), 500, "generation_failed"),
    engine.EngineDeadError: (engine.EngineDeadError("shut down"), 503, "aborted"),
    engine.ExecutorStoppedError: (engine.ExecutorStoppedError("stopped"), 503, "aborted"),
    engine.ModelNotLoadedError: (engine.ModelNotLoadedError("m"), 503, "aborted"),
    engine.ModelInUseError: (engine.ModelInUseError("m", 2), 409, "model_busy"),
}

# The other layers' typed errors that a request (or a config reload) can meet.
LOWER_ERRORS = [
    (SnapshotCorruptError("m.swsnap", "index points past the end"), 503, "model_load_failed"),
    (SnapshotChecksumError("m.swsnap", "checksum mismatch", "w"), 503, "model_load_failed"),
    (ModelFetchError("no network"), 503, "model_load_failed"),
    (WrongModelKindError("m", "embedding", "chat"), 503, "model_load_failed"),
    (ConfigError("models[0].colour: unknown key"), 400, "invalid_config"),
    (UnknownSourceError("unknown model 'nope'"), 400, "invalid_config"),
    (ledger.BudgetError("the pinned models need 3 GiB of a 2 GiB budget"), 400, "invalid_config"),
    (ledger.DuplicateModelError("'m' added twice"), 400, "invalid_config"),
]


def _answer(exc: Exception):
    return error_for(errors.as_router_error(exc, "m"), "m")


@pytest.mark.parametrize(("exc", "status", "code", "param"), ROUTER_ERRORS)
def test_router_errors_map_to_openai_errors(exc, status, code, param):
    error = error_for(exc, "m")
    assert (error.status, error.code, error.param) == (status, code, param)
    assert error.message


def test_a_full_queue_says_when_to_retry_and_a_timeout_not_to():
    for exc in (errors.ModelQueueFullError("m"), errors.PipelineQueueFullError("p", 2)):
        error = error_for(exc, "m")
        assert error.headers == {"retry-after": "1"} and error.type == "rate_limit_error"
    assert "`p` has its maximum of 2 requests in flight" in error.message
    error = error_for(errors.RequestTimeoutError("rag", 2.5), "rag")
    assert error.headers == {"x-should-retry": "false"} and error.type == "timeout_error"
    assert error.message.startswith("Request timed out") and "2.5 s" in error.message


def test_every_router_error_class_has_its_row():
    defined = {
        cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.RouterError)
    }
    assert defined - {errors.RouterError} == {type(exc) for exc, *_ in ROUTER_ERRORS}


def test_every_engine_error_maps_to_one_status_and_code():
    defined = {
        cls
        for _, cls in inspect.getmembers(engine, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == engine.__name__
    }
    assert defined == set(ENGINE_ERRORS), "a new engine error needs its row (and a case in as_router_error)"
    for cls, (exc, status, code) in ENGINE_ERRORS.items():
        mapped = errors.as_router_error(exc, "m")
        assert isinstance(mapped, errors.RouterError) and isinstance(mapped, Exception), cls
        error = error_for(mapped, "m")
        assert (error.status, error.code) == (status, code), cls


@pytest.mark.parametrize(("exc", "status", "code"), LOWER_ERRORS)
def test_load_and_config_errors_of_the_lower_layers(exc, status, code):
    error = _answer(exc)
    assert (error.status, error.code) == (status, code)


def test_a_value_error_is_no_invalid_parameter():
    """Was: any ValueError (a corrupt snapshot is one) answered "400 invalid parameter"."""
    assert isinstance(SnapshotCorruptError("m.swsnap", "bad"), ValueError)
    assert _answer(SnapshotCorruptError("m.swsnap", "bad")).status == 503
    assert errors.as_router_error(ValueError("a bug"), "m").__class__ is ValueError  # untyped: not mapped
    assert _answer(ValueError("a bug")).status == 500


def test_context_length_names_the_limit():
    error = error_for(errors.ContextLengthExceededError(10, 20, 16, "messages"), "m")
    assert "maximum context length is 16 tokens" in error.message and "30 tokens" in error.message
    assert error.param == "messages"


def test_an_unexpected_exception_is_a_500_logged_once(caplog):
    with caplog.at_level(logging.ERROR, logger="swiftserve.server"):
        error = error_for(RuntimeError("a bug"), "m")
    assert (error.status, error.type) == (500, "server_error")
    assert "a bug" not in error.message  # the traceback goes to the log, not to the client
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None


# -- through the router and the app ----------------------------------------------------------------


class _Failing(FakeChatEngine):
    """Fails with `error` before its first output, or after `after` outputs."""

    def __init__(self, error: Exception, after: int | None = None) -> None:
        super().__init__()
        self.error, self.after = error, after

    async def generate(self, prompt, params, request_id=None, priority=0):
        if self.after is None:
            raise self.error
        count = 0
        async for output in super().generate(prompt, params, request_id):
            if count == self.after:
                raise self.error
            count += 1
            yield output


class _FailingEmbed(FakeEmbeddingEngine):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def embed(self, inputs):
        raise self.error


def _app(chat: FakeChatEngine, embed: FakeEmbeddingEngine | None = None) -> App:
    router = Router(ModelPool(10**9, reap_interval_s=3600))
    router.add(FakeServed("chat", "chat", chat), "pinned")
    router.add(FakeServed("embed", "embedding", embed or FakeEmbeddingEngine()), "pinned")
    app = App(router)
    app.is_ready = True  # no lifespan here: the fakes need no start
    return app


def _post(app: App, path: str, body: dict) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, json=body)

    return asyncio.run(go())


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


@pytest.mark.parametrize("after", [None, 1], ids=["before-first-output", "mid-stream"])
def test_a_snapshot_error_during_a_request_is_a_503_not_a_400(after):
    corrupt = SnapshotCorruptError("chat.swsnap", "index points past the end of the file")
    answer = _post(_app(_Failing(corrupt, after)), "/v1/chat/completions", CHAT)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "model_load_failed"
    assert "chat.swsnap" in answer.json()["error"]["message"]

    streamed = _post(_app(_Failing(corrupt, after)), "/v1/chat/completions", {**CHAT, "stream": True})
    if after is None:  # refused before anything was sent: a status
        assert streamed.status_code == 503
    else:  # mid-stream: the stream ends with the error event
        assert '"code":"model_load_failed"' in streamed.text


def test_a_snapshot_error_of_an_embedding_is_a_503():
    app = _app(FakeChatEngine(), _FailingEmbed(SnapshotError("e.swsnap", "truncated")))
    answer = _post(app, "/v1/embeddings", {"model": "embed", "input": "hi"})
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_load_failed"


def test_an_engine_error_mid_stream_is_mapped_as_the_first_one_is():
    """Was: only the first output's errors were mapped; a later one came out raw."""
    answer = _post(
        _app(_Failing(engine.EngineDeadError("engine step failed"), after=1)), "/v1/chat/completions", CHAT
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "aborted")


@pytest.mark.parametrize("stream", [False, True])
def test_an_unexpected_exception_in_a_request_is_a_500_logged_once(caplog, stream):
    app = _app(_Failing(RuntimeError("a bug in the engine"), after=1))
    with caplog.at_level(logging.ERROR):
        answer = _post(app, "/v1/chat/completions", {**CHAT, "stream": stream})
    if stream:
        assert '"type":"server_error"' in answer.text
    else:
        assert answer.status_code == 500
    logged = [
        r for r in caplog.records if r.exc_info is not None and "a bug in the engine" in str(r.exc_info[1])
    ]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
