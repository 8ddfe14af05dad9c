"""A local embedding model as the router serves it (engine/served_model.EmbeddingModel).

Cold, it knows its tokenizer, dimension and footprint (weights only: an encoder keeps no KV cache)
from the prepared folder; load() builds the EmbeddingEngine on the shared device executor, through
the automatic snapshot in snapshot_cache when one is given (EngineConfig.snapshot_cache).
"""

from __future__ import annotations

from tokenizers import Tokenizer

from swiftserve.config import EngineConfig, ModelKind
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.embedding_engine import EmbeddingEngine, EmbeddingResult
from swiftserve.engine.footprint import encoder_footprint
from swiftserve.engine.served_handle import ServedHandle
from swiftserve.engine.served_model import EmbedInputs, Footprint
from swiftserve.loader import load_tokenizer
from swiftserve.loader.model_source import ModelSource, resolve_source
from swiftserve.model_runner.model_loader import resolve_device, serving_torch_dtype


class LocalEmbeddingModel(ServedHandle[EmbeddingEngine, object]):  # it does not park yet
    kind: ModelKind = "embedding"

    def __init__(
        self,
        name: str,
        config: EngineConfig | str,
        executor: DeviceExecutor,
        source: ModelSource | None = None,
        *,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
    ) -> None:
        """config: as EmbeddingEngine takes it; source: config.model resolved (None: here)."""
        super().__init__()
        self.name = name
        self.executor = executor
        self.config = config if isinstance(config, EngineConfig) else EngineConfig(model=config)
        source = source or resolve_source(self.config.model, self.config.cache_dir, progress=False)
        self.source = source.expect("embedding")
        self.tokenizer = load_tokenizer(self.source.path)
        self.dim = self.source.hf_config["hidden_size"]
        self._batch_limits = dict(max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
        dtype = serving_torch_dtype(self.source, self.config.dtype, resolve_device(self.config.device))
        self._footprint = encoder_footprint(self.source.path, dtype)
        # Built by the first load, handed to every later one: building it costs more than
        # mapping the encoder's snapshot.
        self._input_tokenizer: Tokenizer | None = None

    def footprint(self) -> Footprint:
        return self._footprint

    @property
    def engine(self) -> EmbeddingEngine | None:
        return self._engine

    async def embed(self, inputs: EmbedInputs) -> EmbeddingResult:
        """EmbeddingEngine.embed; ModelNotLoadedError while cold."""
        return await self._resident_engine().embed(inputs)

    # -- ServedHandle -----------------------------------------------------------------------------
    def _build(self) -> EmbeddingEngine:
        engine = EmbeddingEngine(
            self.config,
            executor=self.executor,
            name=self.name,
            source=self.source,
            input_tokenizer=self._input_tokenizer,
            **self._batch_limits,
        )
        self._input_tokenizer = engine.input_tokenizer
        return engine

    async def _stop(self, engine: EmbeddingEngine) -> None:
        await engine.shutdown()
        await engine.wait_detached()
        engine.release_model()
