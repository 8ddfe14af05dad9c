"""A local chat model as the router serves it (engine/served_model.ChatModel): cold until load().

Cold, it knows what the server validates with (tokenizer, chat template, max_model_len) and its
footprint, from the folder's config and safetensors headers (from the config alone for dummy
weights, load_format "dummy"); the folder must be prepared already
(`swiftserve pull`), so building a handle never downloads on a request's path.

Loaded, its KV cache starts at the floor its footprint counts (one max_model_len sequence) and is
resized by whoever keeps the memory budget (router/kv_controller.py), through `resize_kv`.

Parked (ServedHandle.park), it keeps its module with the weights (engine/host_park.py) and
nothing else; a reload builds a fresh engine, KV cache and fused-decode table around it.

Its grammar backend (llguidance's tokenizer: seconds to build for a large vocabulary) is built on
its first constrained request, not at load: the build holds the GIL for its whole length (measured:
other threads get ~2.5% of their throughput meanwhile), so building at every cold load would stall
the event loop and the other models' steps for seconds even where nobody asks for a grammar. Once
built it is kept across unloads: every engine of the model gets the same slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from swiftserve.config import EngineConfig, ModelKind
from swiftserve.engine.async_engine import AsyncEngine
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.footprint import chat_footprint, max_kv_tokens
from swiftserve.engine.grammar_backend_slot import GrammarBackendSlot
from swiftserve.engine.host_park import ParkedWeights, park_weights, restore_weights
from swiftserve.engine.llm_engine import wanted_max_model_len
from swiftserve.engine.memory import release_keeping_weights, release_llm_engine
from swiftserve.engine.served_handle import ServedHandle
from swiftserve.engine.served_model import Footprint
from swiftserve.loader import apply_chat_template, load_tokenizer
from swiftserve.loader.model_source import ModelSource, resolve_source
from swiftserve.model_runner.model_loader import resolve_device, serving_torch_dtype
from swiftserve.model_runner.model_runner import DEFAULT_KV_CACHE_MEMORY, CausalLM
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams
from swiftserve.scheduler.kv_demand import KvUsage

# LlamaConfig.from_hf's default when a config names no limit.
_DEFAULT_MAX_POSITIONS = 2048

T = TypeVar("T")


class LocalChatModel(ServedHandle[AsyncEngine, ParkedWeights]):
    kind: ModelKind = "chat"

    def __init__(
        self, name: str, config: EngineConfig, executor: DeviceExecutor, source: ModelSource | None = None
    ) -> None:
        """source: config.model resolved (None: resolved here); every load reuses it."""
        super().__init__()
        self.name = name
        self.config = config
        self.executor = executor
        self.source = (source or resolve_source(config.model, config.cache_dir, progress=False)).expect(
            "chat"
        )
        hf_config = self.source.hf_config
        self.tokenizer = load_tokenizer(self.source.path)
        model_limit = hf_config.get("max_position_embeddings", _DEFAULT_MAX_POSITIONS)
        dtype = serving_torch_dtype(self.source, config.dtype, resolve_device(config.device))
        block_size = config.scheduler.block_size
        # What the engine will compute from its real cache once loaded (llm_engine.py).
        kv_memory = config.kv_cache_memory or DEFAULT_KV_CACHE_MEMORY
        kv_tokens = max_kv_tokens(hf_config, block_size, dtype, kv_memory)
        self.max_model_len = wanted_max_model_len(config, model_limit, kv_tokens)
        self._grammar_backend: GrammarBackendSlot | None = None  # the first engine's, then kept
        self._footprint = chat_footprint(
            self.source.path, hf_config, dtype, block_size, self.max_model_len, config.load_format
        )

    def footprint(self) -> Footprint:
        return self._footprint

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def engine(self) -> AsyncEngine | None:
        """The running engine while resident (stats, tests), else None."""
        return self._engine

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """kwargs: what else the template is given (`tools`)."""
        return apply_chat_template(self.tokenizer, messages, add_generation_prompt, **kwargs)

    @property
    def model_type(self) -> str | None:
        """The config's model_type (`llama`, `gemma3_text`): which tool-call format it speaks."""
        return self.source.hf_config.get("model_type")

    def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[RequestOutput, None]:
        """AsyncEngine.generate; ModelNotLoadedError at once while cold."""
        return self._resident_engine().generate(prompt, params, request_id, priority)

    def abort(self, request_id: str) -> None:
        if self._engine is not None:
            self._engine.abort(request_id)

    # -- the KV cache -----------------------------------------------------------------------------
    async def kv_usage(self) -> KvUsage:
        """The engine's KV use, read between two steps; ModelNotLoadedError while cold."""
        engine = self._resident_engine().engine
        return await self._on_executor(engine.kv_usage)

    async def resize_kv(self, num_blocks: int) -> KvUsage:
        """LLMEngine.resize_kv between two steps; the usage after it."""
        engine = self._resident_engine().engine

        def resize() -> KvUsage:
            engine.resize_kv(num_blocks)
            return engine.kv_usage()

        return await self._on_executor(resize)

    async def _on_executor(self, fn: Callable[[], T]) -> T:
        """fn on the lane that steps this engine, between two of its steps."""
        return await asyncio.wrap_future(self.executor.call(fn, self.name))

    # -- ServedHandle -----------------------------------------------------------------------------
    def _build(self) -> AsyncEngine:
        return self._new_engine(None)

    def _build_from_parked(self, parked: ParkedWeights) -> AsyncEngine:
        return self._new_engine(restore_weights(parked))

    def _new_engine(self, model: CausalLM | None) -> AsyncEngine:
        engine = AsyncEngine(
            self.config, self.executor, self.name, self.tokenizer, model, self.source, self._grammar_backend
        )
        self._grammar_backend = engine.engine.grammars.backend_slot
        # Not attached to the executor yet, so nothing else touches it: start at the floor the
        # footprint counts; the budget's keeper grows it (a reserved range on CPU costs nothing).
        engine.engine.resize_kv(self._footprint.kv_floor_blocks)
        return engine

    async def _stop(self, engine: AsyncEngine) -> None:
        await engine.shutdown()
        release_llm_engine(engine.engine)

    async def _park(self, engine: AsyncEngine) -> ParkedWeights:
        await engine.shutdown()
        model = release_keeping_weights(engine.engine)
        return await asyncio.to_thread(park_weights, model)  # a device-to-host copy on CUDA
