"""The one thread that fills a step's grammar masks while the model's forward runs.

llguidance computes masks in Rust with the GIL released (LLExecutor.unsafe_compute_mask_ptr), so a
fill on this thread and the forward's OpenMP team on the stepping thread run side by side. One
persistent thread, started on first use: a fresh thread per step would cost more than small fills.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class MaskWorkerClosedError(RuntimeError):
    """A fill was submitted after the worker was closed (its runner was released)."""


class MaskFillWorker:
    """Runs one job at a time, in submission order; close() waits for the job in progress."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()  # close() may come from another thread than the stepping one

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                raise MaskWorkerClosedError("the mask fill worker is closed")
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mask-fill")
            return self._pool.submit(job)

    @property
    def is_started(self) -> bool:
        return self._pool is not None

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stops the thread after the job in progress (a fill: milliseconds). Idempotent."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
