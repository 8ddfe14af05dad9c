"""Compiling a request's constraint, off the event loop and off the step: a small thread pool, a
timeout, and an LRU cache keyed by the canonical constraint (the compiler is one tokenizer's, so
the key needs no tokenizer part). Failures are cached too: a bad schema fails fast the next time.

The backend (its tokenizer: ~1 s to build for SmolLM2's 49k tokens, several for 128k or 262k)
is built in the pool, once per model (engine/grammar_backend_slot.py), by the first compile (not
at load: the build holds the GIL). A compile waits for it, but
that wait is bounded by backend_timeout_s, not by the compile's own timeout: the timeout refuses a
constraint that is slow to compile, and no constraint is slow because the tokenizer is new.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from swiftserve.config import DEFAULT_GRAMMAR_COMPILE_TIMEOUT_S
from swiftserve.engine.errors import GrammarError
from swiftserve.engine.grammar_backend_slot import DEFAULT_BACKEND_TIMEOUT_S, GrammarBackendSlot
from swiftserve.model_runner.grammar.interface import (
    CompiledGrammar,
    GrammarBackend,
    GrammarBackendMissingError,
    GrammarCompileError,
)
from swiftserve.structured_outputs import StructuredOutputs

DEFAULT_CACHE_SIZE = 256


@dataclass
class GrammarCompileStats:
    num_compiles: int = 0  # compiles run (cache misses that reached the backend)
    num_cache_hits: int = 0
    num_failures: int = 0  # constraints refused, timeouts among them
    num_timeouts: int = 0
    compile_s_total: float = 0.0
    last_compile_s: float = 0.0


class GrammarCompiler:
    """backend: the model's backend slot, or a function that builds the backend (then the slot is
    this compiler's own). timeout_s bounds how long a request waits for its compile; a compile
    past it is refused (and remembered as refused: the same constraint would take as long
    again), though the backend finishes it in the background. backend_timeout_s bounds the wait
    for the backend's build, which is not a compile's to pay for."""

    def __init__(
        self,
        backend: GrammarBackendSlot | Callable[[], GrammarBackend],
        timeout_s: float = DEFAULT_GRAMMAR_COMPILE_TIMEOUT_S,
        cache_size: int = DEFAULT_CACHE_SIZE,
        num_threads: int = 1,
        backend_timeout_s: float = DEFAULT_BACKEND_TIMEOUT_S,
    ) -> None:
        slot = backend if isinstance(backend, GrammarBackendSlot) else GrammarBackendSlot(backend)
        self.backend_slot = slot
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.num_threads = num_threads
        self.backend_timeout_s = backend_timeout_s
        self.stats = GrammarCompileStats()
        self.was_asked = False  # a constrained request came (the engine reports stats from then on)
        self._cache: OrderedDict[str, CompiledGrammar | GrammarError] = OrderedDict()
        self._pending: dict[str, concurrent.futures.Future[CompiledGrammar]] = {}
        self._lock = threading.Lock()  # the event loop and the executor thread both compile
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def backend(self) -> GrammarBackend | None:
        """The built backend (what the runner fills masks with); None until it is built."""
        return self.backend_slot.backend

    def start_backend(self) -> concurrent.futures.Future[GrammarBackend]:
        """Starts building the backend in the pool, unless it is built or building already."""
        return self.backend_slot.start(self._thread_pool())

    def compile(self, spec: StructuredOutputs) -> CompiledGrammar:
        """The compiled constraint, blocking the caller (the Python API's add_request).
        Raises GrammarError."""
        self.was_asked = True
        try:
            self.start_backend().result(timeout=self.backend_timeout_s)
        except concurrent.futures.TimeoutError:
            raise self._backend_timed_out(spec) from None
        except GrammarBackendMissingError as exc:
            raise GrammarError(spec.param, str(exc)) from None
        return self._compile_within_timeout(spec)

    async def compile_async(self, spec: StructuredOutputs) -> CompiledGrammar:
        """compile() for the event loop: the waits are asynchronous, so other requests go on."""
        self.was_asked = True
        building = asyncio.shield(asyncio.wrap_future(self.start_backend()))
        try:
            await asyncio.wait_for(building, self.backend_timeout_s)
        except TimeoutError:
            raise self._backend_timed_out(spec) from None
        except GrammarBackendMissingError as exc:
            raise GrammarError(spec.param, str(exc)) from None
        future = self._submit(spec)
        if not isinstance(future, concurrent.futures.Future):
            return _result(future)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout_s)
        except TimeoutError:
            raise self._timed_out(spec) from None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- inside ----------------------------------------------------------------------------------
    def _thread_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.num_threads, "grammar-compile")
            return self._pool

    def _compile_within_timeout(self, spec: StructuredOutputs) -> CompiledGrammar:
        future = self._submit(spec)
        if not isinstance(future, concurrent.futures.Future):
            return _result(future)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise self._timed_out(spec) from None

    def _submit(
        self, spec: StructuredOutputs
    ) -> CompiledGrammar | GrammarError | concurrent.futures.Future[CompiledGrammar]:
        key = spec.cache_key()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.stats.num_cache_hits += 1
                return _with_param(cached, spec.param)
            pending = self._pending.get(key)
            if pending is None:
                pending = self._thread_pool().submit(self._compile, key, spec)
                self._pending[key] = pending
            return pending

    def _compile(self, key: str, spec: StructuredOutputs) -> CompiledGrammar:
        """In the pool, once the backend is built (both compile paths wait for it first)."""
        backend = self.backend
        assert backend is not None
        start = time.perf_counter()
        try:
            compiled: CompiledGrammar | GrammarError = backend.compile(spec)
        except GrammarCompileError as exc:
            compiled = GrammarError(exc.param, str(exc))
        elapsed = time.perf_counter() - start
        with self._lock:
            self._pending.pop(key, None)
            self.stats.num_compiles += 1
            self.stats.compile_s_total += elapsed
            self.stats.last_compile_s = elapsed
            if isinstance(compiled, GrammarError):
                self.stats.num_failures += 1
            self._remember(key, compiled)
        return _result(compiled)

    def _timed_out(self, spec: StructuredOutputs) -> GrammarError:
        error = GrammarError(
            spec.param, f"the constraint did not compile within its timeout of {self.timeout_s:g} s"
        )
        with self._lock:
            self.stats.num_failures += 1
            self.stats.num_timeouts += 1
            self._remember(spec.cache_key(), error)
        return error

    def _backend_timed_out(self, spec: StructuredOutputs) -> GrammarError:
        # Not remembered: the constraint is not at fault, and the build may yet finish.
        message = f"the grammar backend was not built within {self.backend_timeout_s:g} s"
        return GrammarError(spec.param, message)

    def _remember(self, key: str, value: CompiledGrammar | GrammarError) -> None:
        # A timeout recorded first is kept: the compile that finishes later does not undo it.
        if isinstance(self._cache.get(key), GrammarError):
            return
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _with_param(cached: CompiledGrammar | GrammarError, param: str) -> CompiledGrammar | GrammarError:
    """A cached failure names the field of the request that asks now (response_format, guided_json...)."""
    if isinstance(cached, GrammarError) and cached.param != param:
        return GrammarError(param, cached.message)
    return cached


def _result(value: CompiledGrammar | GrammarError) -> CompiledGrammar:
    if isinstance(value, GrammarError):
        raise GrammarError(value.param, value.message)  # a fresh one: a cached error is shared
    return value
