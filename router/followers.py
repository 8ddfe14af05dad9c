"""Which model follows which outside a pipeline, learned from sessions, so a call can pre-warm the next.

A client that chains its calls itself (an agent loop, a chain in an application framework) declares
nothing to the server, but its calls come in sessions: the `x-session-id` header, or OpenAI's `user`
field. Within one session, the call that comes after a call to model A, if it comes within
`window_s`, is A's successor; a call with none in time (a later call past the window, or the session
gone quiet) counts as A followed by nothing. B is a follower of A once B followed at least
`min_support` of A's calls and at least `min_share` of them: a call to A then starts B's load where B
is cold and fits the memory that is free (router.py decides that). A repeated call to A is A's own
successor and counts against every follower's share.

Bookkeeping only (names, counts and times); the sessions kept are bounded by `max_sessions`, oldest
first, and each session older than the window is closed when the next observation comes.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class FollowerConfig:
    """enabled: learn and pre-warm at all. window_s: how soon a next call must come to follow.
    min_support, min_share: how often, in calls and as a share of the leader's calls, before a
    follower is pre-warmed. max_sessions: the open sessions remembered."""

    enabled: bool = True
    window_s: float = 30.0
    min_support: int = 3
    min_share: float = 0.5
    max_sessions: int = 10_000

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"followers.window must be > 0 seconds, got {self.window_s}")
        if self.min_support < 1:
            raise ValueError(f"followers.min_support must be >= 1, got {self.min_support}")
        if not 0 < self.min_share <= 1:
            raise ValueError(f"followers.min_share must be in (0, 1], got {self.min_share}")
        if self.max_sessions < 1:
            raise ValueError(f"followers.max_sessions must be >= 1, got {self.max_sessions}")


class FollowerStats:
    """Successor counts per model over sessions; `observe` each call, `followers` to ask."""

    def __init__(self, config: FollowerConfig) -> None:
        self.config = config
        self._open: OrderedDict[str, tuple[str, float]] = OrderedDict()  # session -> last call, oldest first
        self._ended: Counter[str] = Counter()  # a model's calls whose successor is known (or none)
        self._next: Counter[tuple[str, str]] = Counter()  # (model, the call after it)

    def observe(self, session: str, model: str, now: float) -> None:
        """A call to `model` in `session` at `now` (seconds, monotonic, never decreasing)."""
        self._close_older_than(now - self.config.window_s)
        last = self._open.pop(session, None)
        if last is not None:
            self._end(last[0], model)
        self._open[session] = (model, now)
        while len(self._open) > self.config.max_sessions:
            _, (oldest, _) = self._open.popitem(last=False)
            self._end(oldest, None)

    def followers(self, model: str) -> list[str]:
        """The models that follow `model` often enough, most often first (never `model` itself)."""
        least = max(self.config.min_support, self.config.min_share * self._ended[model])
        found = [(n, b) for (a, b), n in self._next.items() if a == model and b != model and n >= least]
        return [after for _, after in sorted(found, key=lambda f: (-f[0], f[1]))]

    def counts(self, model: str) -> tuple[int, dict[str, int]]:
        """`model`'s calls with a known successor, and how many each successor took (metrics, tests)."""
        return self._ended[model], {b: n for (a, b), n in self._next.items() if a == model}

    def _close_older_than(self, cutoff: float) -> None:
        while self._open:
            session, (model, at) = next(iter(self._open.items()))
            if at >= cutoff:
                return
            del self._open[session]
            self._end(model, None)

    def _end(self, model: str, after: str | None) -> None:
        self._ended[model] += 1
        if after is not None:
            self._next[(model, after)] += 1
