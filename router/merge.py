"""Several requests' outputs as one stream, in the order they come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def merge(streams: Sequence[AsyncGenerator[T, None]]) -> AsyncGenerator[tuple[int, T], None]:
    """(stream index, item) from every stream as it comes; the first failure is raised, and
    closing the merged stream closes (so aborts) them all."""
    if len(streams) == 1:
        # One stream needs no tasks: its items come straight through, cancellation included.
        async with contextlib.aclosing(streams[0]) as stream:
            async for item in stream:
                yield 0, item
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()  # an item, _END or a _Failed
    tasks = [asyncio.create_task(_pump(i, s, queue)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_END = object()


class _Failed:
    """A stream's exception, carried through the queue to be raised by the consumer."""

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _pump(index: int, stream: AsyncGenerator[T, None], queue: asyncio.Queue[tuple[int, Any]]) -> None:
    try:
        async with contextlib.aclosing(stream):
            async for item in stream:
                queue.put_nowait((index, item))
    except Exception as exc:  # noqa: BLE001 - re-raised by the consumer
        queue.put_nowait((index, _Failed(exc)))
    finally:
        queue.put_nowait((index, _END))
