"""Embedding engine: batches concurrent embed() calls into forwards of one BERT encoder.

Request lifecycle:
1. embed() validates and tokenizes its inputs (long inputs in a worker thread), truncating each
   to max_seq_length as sentence-transformers does, and queues one item per input.
2. The worker coroutine takes the oldest items up to max_batch_size sequences and
   max_batch_tokens tokens, whichever request they belong to, and runs one forward on the
   engine's single compute thread, so the event loop never blocks on model work.
3. Each row is written into its request's output array; a request whose rows are all done gets
   its result. While a forward runs new requests queue up and join the next batch.
A cancelled embed() leaves its items in the queue; the worker skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from swiftserve.engine.errors import QueueFullError
from swiftserve.loader import iter_weights, load_config, load_tokenizer, resolve_model
from swiftserve.models.bert import load_bert_encoder

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Inputs smaller than this (characters or token ids in all) are tokenized and checked on the
# event loop: a thread hop would cost more.
_INLINE_PREPARE_SIZE = 4096


@dataclass
class EmbeddingResult:
    embeddings: np.ndarray  # float32 [num_inputs, dim], one row per input in order
    num_prompt_tokens: int  # tokens the model read, special tokens included, after truncation


class _Request:
    """One embed() call: its token ids and the rows filled in so far."""

    __slots__ = ("token_ids", "embeddings", "num_left", "future")

    def __init__(self, token_ids: list[list[int]], dim: int, future: asyncio.Future | None) -> None:
        self.token_ids = token_ids
        self.embeddings = np.empty((len(token_ids), dim), dtype=np.float32)
        self.num_left = len(token_ids)
        self.future = future

    @property
    def is_abandoned(self) -> bool:
        """Cancelled by its caller or already failed: its remaining rows need no compute."""
        return self.future is not None and self.future.done()

    def result(self) -> EmbeddingResult:
        return EmbeddingResult(self.embeddings, sum(len(ids) for ids in self.token_ids))


_Item = tuple[_Request, int]  # (request, index of one of its inputs)


class EmbeddingEngine:
    """A sentence encoder behind an async, batching API (see the module docstring).

    folder_or_spec is anything swiftserve.loader.resolve_model accepts (an alias such as
    "all-minilm-l6-v2" or a Hugging Face folder). dtype "auto" is bfloat16, device "auto" is
    cuda when available. max_num_waiting bounds the embed() calls queued or running; past it
    embed() raises QueueFullError at once (None: unbounded).
    """

    def __init__(
        self,
        folder_or_spec: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        max_num_waiting: int | None = None,
    ) -> None:
        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_num_waiting is not None and max_num_waiting < 1:
            raise ValueError(f"max_num_waiting must be >= 1 or None, got {max_num_waiting}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        folder = resolve_model(folder_or_spec)
        self.name = Path(folder_or_spec).name if Path(folder_or_spec).exists() else folder_or_spec
        self.device = torch.device(device)
        self.dtype = _DTYPES["bfloat16" if dtype == "auto" else dtype]
        self.model = load_bert_encoder(
            folder, load_config(folder), iter_weights(folder), dtype=self.dtype, device=self.device
        )
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
        self._tokenizer = load_tokenizer(folder).tokenizer
        self._tokenizer = _truncating_copy(self._tokenizer, self.max_seq_length)
        # Set by start(): one compute thread runs the worker's forwards, off the event loop.
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._pending: deque[_Item] = deque()
        self._requests: set[_Request] = set()  # async requests queued or running

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batching worker on the running loop and warm the model up.

        embed() calls it when needed; after shutdown() (or when the loop that ran the worker
        has closed) it starts afresh.
        """
        if self._worker is not None and not self._worker.done():
            return
        # Requests left by a loop that closed can never be answered: drop them.
        self._pending.clear()
        self._requests.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{self.name}")
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name=f"embed-worker-{self.name}")
        # The first forwards pay one-time setup (allocator, kernels): not on a request's clock.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._warm_up)

    async def shutdown(self) -> None:
        """Stop the worker and its thread; calls still waiting fail with RuntimeError."""
        if self._worker is None:
            return
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        for request in list(self._requests):
            if not request.future.done():
                request.future.set_exception(RuntimeError(f"embedding engine {self.name!r} shut down"))
        self._requests.clear()
        self._pending.clear()
        self._executor.shutdown(wait=False)
        self._worker = self._executor = self._wakeup = None

    # ---- public API ------------------------------------------------------------------------

    async def embed(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult:
        """Embed texts or token-id lists; concurrent calls share forwards.

        Raises ValueError for empty or malformed inputs, QueueFullError when max_num_waiting
        calls are already queued or running.
        """
        inputs = _as_batch(inputs)
        if sum(len(x) for x in inputs if isinstance(x, str | list | tuple)) > _INLINE_PREPARE_SIZE:
            token_ids = await asyncio.to_thread(self._to_token_ids, inputs)
        else:
            token_ids = self._to_token_ids(inputs)
        if self._worker is None or self._worker.done():
            await self.start()
        # Checked with no await before the request is registered, so the bound is exact.
        if self.max_num_waiting is not None and len(self._requests) >= self.max_num_waiting:
            raise QueueFullError(
                f"embedding engine {self.name!r} has {len(self._requests)} requests waiting "
                f"(max_num_waiting={self.max_num_waiting})"
            )
        loop = asyncio.get_running_loop()
        request = _Request(token_ids, self.dim, loop.create_future())
        self._requests.add(request)
        request.future.add_done_callback(lambda _: self._requests.discard(request))
        self._pending.extend((request, i) for i in range(len(token_ids)))
        self._wakeup.set()
        return await request.future

    def embed_sync(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult:
        """Blocking embed() on the calling thread for the Python API and tests.

        It batches only its own inputs and needs no start(); never call it on the event loop.
        """
        request = _Request(self._to_token_ids(_as_batch(inputs)), self.dim, future=None)
        items: deque[_Item] = deque((request, i) for i in range(request.num_left))
        while items:
            self._forward(self._next_batch(items))
        return request.result()

    # ---- internals -------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._next_batch(self._pending)
            if not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            requests = list(dict.fromkeys(request for request, _ in batch))
            try:
                await loop.run_in_executor(self._executor, self._forward, batch)
            except Exception as exc:  # a failed forward fails its requests, not the worker
                for request in requests:
                    if not request.is_abandoned:
                        request.future.set_exception(exc)
                continue
            for request in requests:
                if request.num_left == 0 and not request.is_abandoned:
                    request.future.set_result(request.result())

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
        """Runs on the compute thread: one forward, rows written into their requests."""
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
        """Validate and tokenize; every sequence comes back 1..max_seq_length tokens long."""
        if isinstance(inputs[0], str):
            for i, text in enumerate(inputs):
                if not isinstance(text, str):
                    raise ValueError(f"input[{i}]: expected a string as input[0] is, got {_type(text)}")
                if not text:
                    raise ValueError(f"input[{i}] is an empty string")
            return [encoding.ids for encoding in self._tokenizer.encode_batch(inputs)]
        token_ids = []
        for i, ids in enumerate(inputs):
            if not isinstance(ids, list | tuple):
                raise ValueError(f"input[{i}]: expected a list of token ids, got {_type(ids)}")
            if not ids:
                raise ValueError(f"input[{i}] is an empty list of token ids")
            bad = [t for t in ids if type(t) is not int or not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(
                    f"input[{i}]: token ids must be ints in [0, {self.vocab_size}), got {bad[:5]!r}"
                )
            token_ids.append(list(ids[: self.max_seq_length]))
        return token_ids


def _as_batch(inputs) -> list:
    """A lone string or token-id list becomes a batch of one; an empty batch is an error."""
    if isinstance(inputs, str) or (isinstance(inputs, list | tuple) and inputs and type(inputs[0]) is int):
        return [inputs]
    if not isinstance(inputs, list | tuple):
        kinds = "a string, a list of strings or a list of token-id lists"
        raise ValueError(f"input must be {kinds}, not {_type(inputs)}")
    if not inputs:
        raise ValueError("input is empty: give at least one string or token-id list")
    return list(inputs)


def _type(value) -> str:
    return type(value).__name__


def _truncating_copy(tokenizer, max_seq_length: int):
    """A private copy that adds special tokens, truncates like sentence-transformers and never pads.

    tokenizer.json files often carry a fixed padding or a shorter truncation (MiniLM's pads and
    truncates to 128); the shared tokenizer object is left untouched.
    """
    copy = type(tokenizer).from_str(tokenizer.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length=max_seq_length)
    return copy
