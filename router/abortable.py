"""A request's outputs that end when the router shuts down, whatever the engine does.

An engine keeps a request until it finishes, and the pool unloads no model with requests in
flight, so at shutdown nothing else would end a long stream: racing each next output against
the router's `closing` event does (one small task per output, nothing next to a decode step).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from swiftserve.router.errors import RequestAbortedError

T = TypeVar("T")


async def until_closed(stream: AsyncIterator[T], closing: asyncio.Event) -> AsyncGenerator[T, None]:
    """`stream`'s items; RequestAbortedError once `closing` is set. The caller closes `stream`."""
    closed = asyncio.ensure_future(closing.wait())
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(stream.__anext__())
            await asyncio.wait((step, closed), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise RequestAbortedError("the router is shutting down")
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        closed.cancel()
        if step is not None and not step.done():
            # Cancelling the pending step throws into the engine's generator, which aborts it.
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
