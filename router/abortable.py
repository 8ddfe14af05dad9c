"""A request's outputs that end when the router shuts down, whatever the engine does.

An engine keeps a request until it finishes, and the pool unloads no model with requests in
flight, so at shutdown nothing else would end a long stream: racing each next output against
the router's `closing` event does (one small task per output, nothing next to a decode step).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from swiftserve.router.errors import RequestAbortedError
from swiftserve.router.race import race

T = TypeVar("T")


def until_closed(stream: AsyncIterator[T], closing: asyncio.Event) -> AsyncGenerator[T, None]:
    """`stream`'s items; RequestAbortedError once `closing` is set. The caller closes `stream`."""
    return race(stream, closing.wait, lambda: RequestAbortedError("the router is shutting down"))
