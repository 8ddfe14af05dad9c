"""A request's time limit (`timeout`, seconds): from its arrival to its last output, every stage.

When it passes, the request ends with RequestTimeoutError, and what it held is let go the way a
client that hangs up lets go of it: the calls in flight are cancelled, which aborts their engine
requests (their KV blocks go back) and ends a pipeline's leases. Two shapes of call:
- `async with deadline.bounding():` around a call that returns once (opening a stream, a whole
  pipeline): asyncio's own timeout cancels the call when the time is up;
- `deadline.bound(items)` around a stream: each next item is raced against the time left, and
  the one still pending when it runs out is cancelled, which throws into the stream and closes it
  (the same way router/abortable.py ends streams at shutdown: both are router/race.py's).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from swiftserve.router.errors import InvalidParameterError, RequestTimeoutError
from swiftserve.router.race import race

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """name: the model or pipeline called (named in the error). at: the event loop's time when
    the request ends (None: no limit). on_expired runs once, when the error is raised."""

    name: str
    seconds: float | None = None
    at: float | None = None
    on_expired: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)

    @classmethod
    def start(
        cls, name: str, seconds: float | None, on_expired: Callable[[], None] = lambda: None
    ) -> Deadline:
        """A deadline `seconds` from now (None: none); InvalidParameterError unless > 0."""
        if seconds is None:
            return cls(name)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
            raise InvalidParameterError(
                "timeout", f"timeout must be a number of seconds > 0, got {seconds!r}"
            )
        return cls(name, float(seconds), asyncio.get_running_loop().time() + seconds, on_expired)

    def _expired(self) -> RequestTimeoutError:
        self.on_expired()
        assert self.seconds is not None
        return RequestTimeoutError(self.name, self.seconds)

    @contextlib.asynccontextmanager
    async def bounding(self) -> AsyncIterator[None]:
        """Cancels the block when the time is up; RequestTimeoutError comes out of it then."""
        if self.at is None:
            yield
            return
        timeout = asyncio.timeout_at(self.at)
        try:
            async with timeout:
                yield
        except TimeoutError:
            if not timeout.expired():  # another timeout's error (a load's): not ours
                raise
            raise self._expired() from None

    def bound(self, items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """`items`, ended with RequestTimeoutError when the time is up (the stream closed first)."""
        if self.at is None:
            return items
        return self._until(items, self.at)

    async def _until(self, items: AsyncGenerator[T, None], at: float) -> AsyncGenerator[T, None]:
        loop = asyncio.get_running_loop()
        async with contextlib.aclosing(items):
            async with contextlib.aclosing(
                race(items, lambda: asyncio.sleep(max(0.0, at - loop.time())), self._expired)
            ) as bounded:
                async for item in bounded:
                    yield item
