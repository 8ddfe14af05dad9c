"""Which request the current task serves, for the model pool's arrival order.

`serving(pool, ticket)` is set around a pipeline's stages, so that the model calls they make
through the router's handles keep the pipeline's place in the arrival order without a ticket
argument on every layer between. A context variable: each task sees its own value (and the tasks
it starts inherit it), so requests never see one another's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# (id of the pool, the arrival ticket of the request it serves)
_SERVING: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "swiftserve_serving", default=None
)


@contextlib.contextmanager
def serving(pool: object, ticket: int) -> Iterator[None]:
    """Model calls of `pool` made in this context, and in the tasks started from it, are the
    request with `ticket`'s."""
    token = _SERVING.set((id(pool), ticket))
    try:
        yield
    finally:
        _SERVING.reset(token)


def served_ticket(pool: object) -> int | None:
    """The ticket of the request this task serves on `pool`, or None."""
    current = _SERVING.get()
    return current[1] if current is not None and current[0] == id(pool) else None
