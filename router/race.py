"""A stream raced, item by item, against something that may end it first (a deadline, a shutdown).

One small task per item (the stream's next one) beside one task for the stop, nothing next to a
decode step. When the stop wins, the pending item is cancelled, which throws into the stream, so
an engine stream aborts its request; it is awaited, so the request is let go when this raises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def race(
    stream: AsyncIterator[T], stop: Callable[[], Awaitable[object]], stopped: Callable[[], BaseException]
) -> AsyncGenerator[T, None]:
    """`stream`'s items until `stop()` completes first; then `stopped()` is raised. The caller
    closes `stream`. stop is a factory, so nothing is awaited for a race never started."""
    stopper = asyncio.ensure_future(stop())
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(stream.__anext__())
            await asyncio.wait((step, stopper), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise stopped()
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stopper.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
