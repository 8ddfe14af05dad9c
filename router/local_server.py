"""`swiftserve.Server`: several models behind one router, in this process, without HTTP.

    async with Server(models=["smollm2-135m-instruct"], on_demand=["all-minilm-l6-v2"]) as s:
        reply = await s.chat("smollm2-135m-instruct", [{"role": "user", "content": "Hi"}], max_tokens=16)
        vectors = (await s.embed("all-minilm-l6-v2", ["a text"])).embeddings

It takes what `swiftserve launch` takes (the same RouterConfig: model specs, policies, memory
budget, idle timeout, engine defaults, or a config file) and is built by the same builder
(runtime.py), so a model behaves here as it does behind the HTTP server. Errors are the
router's typed errors (router/errors.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swiftserve.router.config_file import DEFAULT_IDLE_TIMEOUT_S, parse_duration
from swiftserve.router.followers import FollowerConfig
from swiftserve.router.model_info import ModelInfo
from swiftserve.router.pipeline_spec import PipelineSpec
from swiftserve.router.pipeline_stream import PipelineStream
from swiftserve.router.pipeline_types import PipelineResult
from swiftserve.router.request_types import Generation, GenerationStream
from swiftserve.router.router import Router
from swiftserve.router.router_config import RouterConfig
from swiftserve.router.runtime import ReloadResult, RouterRuntime
from swiftserve.scheduler.memory_budget import parse_bytes

Specs = str | Sequence[str] | None


class Server:
    """In-process multi-model serving. `models` are pinned (loaded at start, never evicted),
    `on_demand` ones load on first use and unload after `idle_timeout` idle; specs are aliases,
    folders or .gguf files, optionally `served_name=spec`, as on the command line. Sizes take
    "6GiB"-style strings, durations "60s"-style ones. request_timeout: the timeout of requests that
    set none (default: none). chat_lanes: chat models stepping side by side (default: 2 on two
    cores or more; 1 steps one at a time). parallel_loads: model loads at once, the others waiting
    in arrival and need order (default: no limit). followers: learning which model follows which
    in sessions, to pre-warm the followers (swiftserve.FollowerConfig; False: off; default: the
    config file's, else on). Other keywords:
    default_max_tokens, snapshots (automatic snapshots, on by default) and the engine defaults
    (ServeDefaults: dtype, device, max_model_len, max_num_seqs, max_queue, kv_cache_memory, seed,
    ...). `pipelines` are served beside the config file's (swiftserve.Pipeline); a pipeline's name
    is called like a model's in `chat`.
    Use it as an async context manager, or call start() and stop()."""

    def __init__(
        self,
        models: Specs = None,
        *,
        on_demand: Specs = None,
        memory_budget: int | str | None = None,
        host_memory: int | str | None = None,
        idle_timeout: float | str = DEFAULT_IDLE_TIMEOUT_S,
        config_file: str | Path | None = None,
        pipelines: Sequence[PipelineSpec] = (),
        request_timeout: float | str | None = None,
        chat_lanes: int | None = None,
        parallel_loads: int | None = None,
        followers: FollowerConfig | bool | None = None,
        **engine_defaults: Any,
    ) -> None:
        timeout = None if request_timeout is None else parse_duration(request_timeout, "request_timeout")
        self.config = RouterConfig.build(
            _specs(models),
            _specs(on_demand),
            config_file=config_file,
            idle_timeout_s=parse_duration(idle_timeout, "idle_timeout"),
            memory_budget=_bytes(memory_budget),
            host_memory=_bytes(host_memory),
            pipelines=tuple(pipelines),
            request_timeout_s=timeout,
            chat_lanes=chat_lanes,
            parallel_loads=parallel_loads,
            followers=_followers(followers),
            **_sized(engine_defaults),
        )
        self._runtime = RouterRuntime(self.config)

    @classmethod
    def from_config(cls, path: str | Path, **settings: Any) -> Server:
        """The models of a config file (`swiftserve launch --config`); keywords as the flags
        (memory_budget wins over the file's, engine defaults yield to each model's own)."""
        return cls(config_file=path, **settings)

    @property
    def router(self) -> Router:
        return self._runtime.router

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Builds every model cold and loads the pinned ones; stops again if one fails."""
        try:
            await self._runtime.start()
        except BaseException:
            await self._runtime.stop()
            raise

    async def stop(self) -> None:
        await self._runtime.stop()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- requests ---------------------------------------------------------------------------------
    async def chat(self, model: str, messages: list[dict], **sampling: Any) -> Generation:
        """The reply to `messages` ({"role", "content"} dicts). `sampling`: max_tokens, the
        SamplingParams fields (n, temperature, top_p, stop, seed, logprobs, ...), and the request's
        priority (lower runs earlier), timeout (seconds) and session (the client's session id: who
        follows whom is learned per session), as on every request call below."""
        return await self.router.chat(model, messages, **sampling)

    async def open_chat(self, model: str, messages: list[dict], **sampling: Any) -> GenerationStream:
        """The reply streamed: iterate it for each step's ChoiceDeltas and usage; `aclose()` it
        to stop early (that aborts the request)."""
        return await self.router.open_chat(model, messages, **sampling)

    async def complete(self, model: str, prompt: str | list, **sampling: Any) -> Generation:
        """Completions of a prompt (text or token ids) or of a list of prompts."""
        return await self.router.complete(model, prompt, **sampling)

    async def open_completion(self, model: str, prompt: str | list, **sampling: Any) -> GenerationStream:
        return await self.router.open_completion(model, prompt, **sampling)

    async def embed(self, model: str, texts: list[str] | list[list[int]], session: str | None = None) -> Any:
        """One float32 row per input (`.embeddings`) and the tokens read (`.num_prompt_tokens`)."""
        return await self.router.embed(model, texts, session)

    async def run_pipeline(self, name: str, messages: list[dict], **sampling: Any) -> PipelineResult:
        """Every stage's output, usage and timings (`chat(name, ...)` gives the final reply only);
        `sampling` (max_tokens, temperature, ...) applies to the final stage."""
        return await self.router.run_pipeline(name, messages, **sampling)

    async def open_pipeline(self, name: str, messages: list[dict], **sampling: Any) -> PipelineStream:
        """run_pipeline with the final stage streamed (iterate its steps; `result()` at the end)."""
        return await self.router.open_pipeline(name, messages, **sampling)

    # -- models -----------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        """Every model with its kind, policy and state (cold, loading, resident, unloading)."""
        return self.router.models()

    async def load(self, name: str) -> None:
        """Makes `name` resident now (evicting idle on-demand models if it must)."""
        await self.router.load(name)

    async def unload(self, name: str) -> bool:
        """Unloads `name`; False when it was cold. PinnedModelError, ModelBusyError as they say."""
        return await self.router.unload(name)

    async def reload_config(self) -> ReloadResult:
        """Adds the config file's new models (from_config only; NoConfigFileError otherwise)."""
        return await self._runtime.reload_config()


def _specs(specs: Specs) -> tuple[str, ...] | None:
    """A list of specs, or one comma-separated string as on the command line."""
    if specs is None:
        return None
    items = specs.split(",") if isinstance(specs, str) else specs
    return tuple(s.strip() for s in items if s.strip())


def _bytes(value: int | str | None) -> int | None:
    return parse_bytes(value) if isinstance(value, str) else value


def _followers(value: FollowerConfig | bool | None) -> FollowerConfig | None:
    if isinstance(value, bool):
        return FollowerConfig(enabled=value)
    return value


def _sized(defaults: dict[str, Any]) -> dict[str, Any]:
    """kv_cache_memory may be written "512MiB" as on the command line."""
    if "kv_cache_memory" in defaults:
        defaults = {**defaults, "kv_cache_memory": _bytes(defaults["kv_cache_memory"])}
    return defaults
