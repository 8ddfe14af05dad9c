"""Embedding engine: batches concurrent embed() calls into forwards of one BERT encoder.

Request lifecycle:
1. embed() validates and tokenizes its inputs (long inputs in a worker thread), truncating each
   to max_seq_length as sentence-transformers does, and queues one item per input with an
   executor command (the queue belongs to the executor thread, so it needs no lock).
2. The device executor (engine/device_executor.py) steps this engine whenever items wait, ahead
   of decode work (an embedding batch is urgent): a step takes the oldest items up to
   max_batch_size sequences and max_batch_tokens tokens, whichever request they belong to, and
   runs one forward. The event loop never blocks on model work.
3. Each row is written into its request's output array; a request whose rows are all done gets
   its result on its own event loop. While a forward runs, new requests queue up and join the next
   batch. A failed forward fails the requests in that batch only.
A cancelled embed() leaves its items in the queue; the step skips them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from swiftserve.config import EngineConfig
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.device_stream import EngineStream
from swiftserve.engine.embedding_inputs import (
    EmbeddingResult,
    EmbedRequest,
    as_batch,
    to_token_ids,
    truncates_at,
    truncating_copy,
)
from swiftserve.engine.errors import EngineDeadError, QueueFullError, RequestFailedError
from swiftserve.loader import iter_weights, load_tokenizer
from swiftserve.loader.model_source import ModelSource, resolve_source
from swiftserve.loader.snapshot_cache import load_through_cache
from swiftserve.model_runner.model_loader import resolve_device, serving_torch_dtype
from swiftserve.models.bert import BertEncoder, load_bert_encoder, load_bert_snapshot, pooling_spec

__all__ = ["EmbeddingEngine", "EmbeddingResult"]

# Inputs smaller than this (characters or token ids in all) are tokenized and checked on the
# event loop: a thread hop would cost more.
_INLINE_PREPARE_SIZE = 4096

_Item = tuple[EmbedRequest, int]  # (request, index of one of its inputs)
_Done = tuple[EmbedRequest, BaseException | None]  # a request finished by a step, or failed


class EmbeddingEngine:
    """A sentence encoder behind an async, batching API (see the module docstring).

    config: an EngineConfig, as a chat engine takes (model, dtype, device, snapshot_cache,
    scheduler.max_num_waiting), or the model alone (an alias such as "all-minilm-l6-v2", a
    Hugging Face folder or a .swsnap snapshot) with EngineConfig fields as keywords. dtype "auto":
    a snapshot's stored dtype, else float32 (loader/dtypes.py). max_num_waiting bounds the embed()
    calls queued or running; past it embed() raises QueueFullError at once (None: unbounded).
    executor is the device's stepping loop (None: a private one); name keys the engine on it.
    snapshot_cache: automatic snapshots there (loader/snapshot_cache.py). source: config.model
    already resolved. input_tokenizer: an earlier engine's of the same model (its
    `input_tokenizer`), so a reload skips building it again (most of an encoder's load from a
    snapshot); one that truncates elsewhere is not used. WrongModelKindError for a chat model.
    """

    def __init__(
        self,
        config: EngineConfig | str,
        *,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        executor: DeviceExecutor | None = None,
        name: str | None = None,
        source: ModelSource | None = None,
        input_tokenizer: Tokenizer | None = None,
        **config_fields: Any,
    ) -> None:
        if isinstance(config, str):
            config = EngineConfig.of(config, **config_fields)
        elif config_fields:
            raise TypeError(f"keywords {sorted(config_fields)} are EngineConfig fields: set them there")
        max_num_waiting = config.scheduler.max_num_waiting
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_num_waiting is not None and max_num_waiting < 1:
            raise ValueError(f"max_num_waiting must be >= 1 or None, got {max_num_waiting}")
        self.source = (source or resolve_source(config.model, config.cache_dir)).expect("embedding")
        folder = self.source.path
        spec = config.model
        self.name = name or (Path(spec).name if Path(spec).exists() else spec)
        self.device = resolve_device(config.device)
        self.dtype = serving_torch_dtype(self.source, config.dtype, self.device)
        cache = Path(config.snapshot_cache) if config.snapshot_cache else None
        self.model = _load_encoder(self.source, self.dtype, self.device, cache)
        self.dim = self.model.dim
        self.max_seq_length = self.model.pooling.max_seq_length
        self.vocab_size = self.model.config.vocab_size
        if max_batch_tokens < self.max_seq_length:
            raise ValueError(
                f"max_batch_tokens ({max_batch_tokens}) must hold one full input "
                f"(max_seq_length {self.max_seq_length})"
            )
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_num_waiting = max_num_waiting
        if not truncates_at(input_tokenizer, self.max_seq_length):
            input_tokenizer = truncating_copy(load_tokenizer(folder).tokenizer, self.max_seq_length)
        self.input_tokenizer: Tokenizer = input_tokenizer
        self._owns_executor = executor is None
        self._executor = executor
        self._is_attached = False
        self._detached: Future | None = None  # set by shutdown(): done once the executor let go
        self._pending: deque[_Item] = deque()  # executor thread only
        self._stream = EngineStream(self.device)
        self._requests: set[EmbedRequest] = set()  # async requests queued or running (event loop)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Attach to the executor and warm the model up; embed() calls it when needed, and after
        shutdown() it starts afresh."""
        if self._is_attached:
            return
        self._is_attached = True  # set first: concurrent embed() calls queue behind the attach
        if self._owns_executor:
            self._executor = DeviceExecutor(f"embed-{self.name}", urgent_lane_threads=0, chat_lanes=1)
            self._executor.start()
        executor = self._attached_executor()
        executor.attach(self.name, self, self._on_outputs, self._on_error, urgent_lane=True)
        # The first forwards pay one-time setup (allocator, kernels): not on a request's clock.
        await asyncio.wrap_future(executor.call(self._warm_up, owner=self.name))

    async def shutdown(self) -> None:
        """Stop stepping; calls still waiting fail with EngineDeadError. Returns without waiting for
        a forward in progress (wait_detached() does)."""
        if not self._is_attached:
            return
        self._is_attached = False
        for request in list(self._requests):
            if request.future is not None and not request.future.done():
                request.future.set_exception(EngineDeadError(f"embedding engine {self.name!r} shut down"))
        self._requests.clear()  # their queued items are abandoned now: the next step skips them
        executor = self._attached_executor()
        self._detached = executor.detach(self.name)
        if self._owns_executor:
            executor.stop(wait=False)  # its thread ends after the forward in progress

    def release_model(self) -> None:
        """After shutdown() and wait_detached(): drops the encoder, so its memory can go (an unload)."""
        del self.model

    async def wait_detached(self) -> None:
        """After shutdown(): returns once the executor holds no reference to this engine."""
        if self._detached is not None:
            await asyncio.wrap_future(self._detached)

    @property
    def num_in_flight(self) -> int:
        return len(self._requests)

    # ---- public API ------------------------------------------------------------------------

    async def embed(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult:
        """Embed texts or token-id lists; concurrent calls share forwards.

        Raises InvalidRequestError for empty or malformed inputs, QueueFullError when
        max_num_waiting calls are already queued or running, RequestFailedError when its forward
        failed.
        """
        inputs = as_batch(inputs)
        if sum(len(x) for x in inputs if isinstance(x, str | list | tuple)) > _INLINE_PREPARE_SIZE:
            token_ids = await asyncio.to_thread(self._to_token_ids, inputs)
        else:
            token_ids = self._to_token_ids(inputs)
        if not self._is_attached:
            await self.start()
        # Checked with no await before the request is registered, so the bound is exact.
        if self.max_num_waiting is not None and len(self._requests) >= self.max_num_waiting:
            raise QueueFullError(
                f"embedding engine {self.name!r} has {len(self._requests)} requests waiting "
                f"(max_num_waiting={self.max_num_waiting})"
            )
        future: asyncio.Future[EmbeddingResult] = asyncio.get_running_loop().create_future()
        request = EmbedRequest(token_ids, self.dim, future)
        self._requests.add(request)
        future.add_done_callback(lambda _: self._requests.discard(request))
        items = [(request, i) for i in range(len(token_ids))]
        self._attached_executor().call(lambda: self._pending.extend(items), owner=self.name)
        return await future

    def embed_sync(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult:
        """Blocking embed() on the calling thread for the Python API and tests.

        It batches only its own inputs and needs no start(); never call it on the event loop.
        """
        request = EmbedRequest(self._to_token_ids(as_batch(inputs)), self.dim, future=None)
        items: deque[_Item] = deque((request, i) for i in range(request.num_left))
        while items:
            self._forward(self._next_batch(items))
        return request.result()

    # ---- Steppable (executor thread) -------------------------------------------------------

    def has_work(self) -> bool:
        while self._pending and self._pending[0][0].is_abandoned:
            self._pending.popleft()
        return bool(self._pending)

    def is_urgent(self) -> bool:
        return True  # a waiting embedding batch is latency-sensitive (it gates a chain's next step)

    def demand(self) -> int:
        return max(1, min(len(self._pending), self.max_batch_size))

    def priority(self) -> int:
        return 0  # embedding calls have no request priority (yet): the default

    def step(self) -> list[_Done]:
        batch = self._next_batch(self._pending)
        requests = list(dict.fromkeys(request for request, _ in batch))
        try:
            self._stream.run(lambda: self._forward(batch))
        except Exception as exc:  # noqa: BLE001 - a failed forward fails its requests, not the engine
            return [(request, _failed(exc)) for request in requests]
        return [(request, None) for request in requests if request.num_left == 0]

    def _on_outputs(self, done: list[_Done]) -> None:
        for request, exc in done:
            if request.future is not None:  # embed_sync's requests never reach the executor
                _call_soon(request.future, _settle, request, exc)

    def _on_error(self, exc: BaseException) -> None:
        # Only has_work() can get here (step() catches its own): fail everything still queued.
        failed = list(dict.fromkeys(request for request, _ in self._pending))
        self._pending.clear()
        self._on_outputs([(request, exc) for request in failed])

    # ---- internals -------------------------------------------------------------------------

    def _attached_executor(self) -> DeviceExecutor:
        """The executor it steps on: the one it was given, or the one start() made."""
        if self._executor is None:
            raise EngineDeadError(f"embedding engine {self.name!r} is not started")
        return self._executor

    def _next_batch(self, items: deque[_Item]) -> list[_Item]:
        """Pop the oldest live items within max_batch_size and max_batch_tokens."""
        batch: list[_Item] = []
        num_tokens = 0
        while items and len(batch) < self.max_batch_size:
            request, index = items[0]
            if request.is_abandoned:
                items.popleft()
                continue
            seq_len = len(request.token_ids[index])
            if num_tokens + seq_len > self.max_batch_tokens:
                break
            batch.append(items.popleft())
            num_tokens += seq_len
        return batch

    def _forward(self, batch: list[_Item]) -> None:
        """One forward, rows written into their requests."""
        embeddings = self.model([request.token_ids[index] for request, index in batch])
        embeddings = embeddings.cpu().numpy()
        for row, (request, index) in enumerate(batch):
            request.embeddings[index] = embeddings[row]
            request.num_left -= 1

    def _warm_up(self) -> None:
        # Two lengths, so both the unpadded and the masked attention paths are set up.
        self.model([[0, 0], [0]])
        self.model([[0]])

    def _to_token_ids(self, inputs: list[str] | list[list[int]]) -> list[list[int]]:
        return to_token_ids(self.input_tokenizer, self.vocab_size, self.max_seq_length, inputs)


def _load_encoder(
    source: ModelSource, dtype: torch.dtype, device: torch.device, snapshot_cache: Path | None = None
) -> BertEncoder:
    """From a snapshot file (tensors mapped or read in place), else from a Hugging Face folder:
    through its automatic snapshot in snapshot_cache when one is given."""
    if source.is_snapshot:
        return load_bert_snapshot(source.path, dtype=dtype, device=device, summary=source.snapshot)
    if snapshot_cache is None:
        return _load_folder(source, dtype, device)
    return load_through_cache(
        snapshot_cache,
        source.path,
        "embedding",
        dtype,
        from_source=lambda: _load_folder(source, dtype, device),
        from_snapshot=lambda path: load_bert_snapshot(path, dtype=dtype, device=device),
        pooling=pooling_spec,
    )


def _load_folder(source: ModelSource, dtype: torch.dtype, device: torch.device) -> BertEncoder:
    folder = source.path
    return load_bert_encoder(folder, source.hf_config, iter_weights(folder), dtype=dtype, device=device)


def _failed(exc: Exception) -> RequestFailedError:
    """What a request whose forward raised gets: the typed error, the forward's as its cause."""
    error = RequestFailedError(f"the embedding forward failed: {exc}")
    error.__cause__ = exc
    return error


def _settle(request: EmbedRequest, exc: BaseException | None) -> None:
    """On the request's loop: its result, or the error of its forward (unless abandoned)."""
    future = request.future
    if future is None or request.is_abandoned:
        return
    if exc is None:
        future.set_result(request.result())
    else:
        future.set_exception(exc)


def _call_soon(future: asyncio.Future, fn, *args) -> None:
    try:
        future.get_loop().call_soon_threadsafe(fn, *args)
    except RuntimeError:  # that loop is closed: nobody is listening any more
        pass
