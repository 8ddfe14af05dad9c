"""How the model pool's waiters learn that something changed: a load admitted or done, a request
or lease released, an unload, KV blocks handed back. A waiter (a load queued for memory, a request
behind an older request's load) rechecks at each change, up to its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time

from swiftserve.router import errors


class PoolChanges:
    """Wakes every waiter at once; `load_timeout_s` bounds each wait from its start."""

    def __init__(self, load_timeout_s: float) -> None:
        self.load_timeout_s = load_timeout_s
        self._changed = asyncio.Event()

    def deadline(self) -> float:
        """The deadline of a wait that starts now."""
        return time.monotonic() + self.load_timeout_s

    async def wait(self, name: str, deadline: float, reason: str) -> None:
        """Returns at the next change or at `deadline`; LoadTimeoutError for `name` once it has
        passed, saying `reason`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise errors.LoadTimeoutError(name, self.load_timeout_s, reason)
        changed = self._changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), remaining)

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
