"""One model's grammar backend, built once in the background and kept across its engines.

Building llguidance's tokenizer takes seconds for a 128k or 262k vocabulary: far more than a
compile, and paid once per model. So it is not a compile: it runs on the grammar compiler's pool
when the model's first constrained request asks for it, under its own generous limit (a compile's
timeout starts once the backend exists), and a served model hands the same slot to the engine of
every reload, so an unload does not throw the built tokenizer away.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

from swiftserve.model_runner.grammar.interface import GrammarBackend

# How long a compile waits for the backend's build, apart from its own compile timeout: a build
# that has not finished in the time a model may take to load is stuck, not slow.
DEFAULT_BACKEND_TIMEOUT_S = 300.0


class GrammarBackendSlot:
    """make builds the backend (blocking; called at most once unless its build was cancelled)."""

    def __init__(self, make: Callable[[], GrammarBackend]) -> None:
        self._make = make
        self._future: concurrent.futures.Future[GrammarBackend] | None = None
        self._lock = threading.Lock()  # the event loop and a caller of compile() both start it

    def start(self, pool: concurrent.futures.Executor) -> concurrent.futures.Future[GrammarBackend]:
        """The build, submitted to pool unless one was already (by this or an earlier engine)."""
        with self._lock:
            # Cancelled: an earlier engine's pool shut down before its worker got to the build.
            if self._future is None or self._future.cancelled():
                self._future = pool.submit(self._make)
            return self._future

    @property
    def build(self) -> concurrent.futures.Future[GrammarBackend] | None:
        """The build once started (running, done or failed); None before any start."""
        return self._future

    @property
    def backend(self) -> GrammarBackend | None:
        """The built backend; None while it builds, after a failed build, or before any start."""
        future = self._future
        if future is None or not future.done() or future.cancelled() or future.exception():
            return None
        return future.result()
