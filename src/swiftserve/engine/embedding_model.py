"""A local embedding model as the router serves it (engine/served_model.EmbeddingModel).

Cold, it knows its tokenizer, dimension and footprint (weights only: an encoder keeps no KV cache)
from the prepared folder; load() builds the EmbeddingEngine on the shared device executor, through
the automatic snapshot in snapshot_cache when one is given (EngineConfig.snapshot_cache).
"""

from __future__ import annotations

from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.embedding_engine import _DTYPES, EmbeddingEngine, EmbeddingResult
from swiftserve.engine.footprint import encoder_footprint
from swiftserve.engine.served_handle import ServedHandle
from swiftserve.engine.served_model import Footprint
from swiftserve.loader import load_config, load_tokenizer, resolve_model


class LocalEmbeddingModel(ServedHandle):
    kind = "embedding"

    def __init__(
        self,
        name: str,
        source: str,
        executor: DeviceExecutor,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        max_num_waiting: int | None = None,
        snapshot_cache: str | None = None,
    ) -> None:
        super().__init__()
        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
        self.name = name
        self.executor = executor
        self.folder = resolve_model(source, progress=False)
        self.tokenizer = load_tokenizer(self.folder)
        self.dim = load_config(self.folder)["hidden_size"]
        self._engine_kwargs = dict(
            dtype=dtype,
            device=device,
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
            max_num_waiting=max_num_waiting,
            snapshot_cache=snapshot_cache,
        )
        self._footprint = encoder_footprint(self.folder, _DTYPES["bfloat16" if dtype == "auto" else dtype])

    def footprint(self) -> Footprint:
        return self._footprint

    @property
    def engine(self) -> EmbeddingEngine | None:
        return self._engine

    async def embed(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult:
        """EmbeddingEngine.embed; ModelNotLoadedError while cold."""
        return await self._resident_engine().embed(inputs)

    # -- ServedHandle -----------------------------------------------------------------------------
    def _build(self) -> EmbeddingEngine:
        kwargs = self._engine_kwargs
        return EmbeddingEngine(str(self.folder), executor=self.executor, name=self.name, **kwargs)

    async def _stop(self, engine: EmbeddingEngine) -> None:
        await engine.shutdown()
        await engine.wait_detached()
        engine.model = None
