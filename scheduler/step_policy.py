"""Which resident model steps next on the one device: the device executor's choice, torch-free.

Several engines share one device; one loop runs one engine step at a time. The choice is:
1. Work-conserving: only engines with work are candidates, so a lone busy model gets the
   whole device.
2. Weighted fair by measured step time, per request: each engine carries a virtual time that
   grows by `step_seconds / (weight * demand)` after each of its steps, where demand is the
   number of sequences that step served; the candidate with the smallest runs next. The unit
   of fairness is the request, not the model: two busy models get device time in proportion to
   the requests they serve, so a model with 2 requests in flight cannot take half the device
   from one with 30 (a model's steps cost nearly as much at 2 rows as at 30, so sharing per
   model would spend half the device on a tenth of the work). An engine that was idle re-enters
   at the smallest virtual time among the busy ones, so idle time banks no credit (as in CFS).
3. Latency-sensitive work first: an engine whose next step serves an embedding batch or a
   request still waiting for its first token is urgent, and is picked ahead of the fair order
   while its virtual time is at most `urgent_slack_s` (device seconds per sequence) ahead of
   the fairest candidate. A single first token or embedding batch therefore never waits behind
   a long run of another model's decode steps, yet a flood of urgent work cannot starve the
   others for more than the slack.
4. A floor on every busy engine's step rate: sharing per request leaves a model with one
   request in flight a sliver of the device, and its steps cost nearly a full batch's, so on
   its own its requests would crawl. An engine that has waited more than `max_step_gap_s` since
   its last step (or since it became busy) is picked first, the longest waiting first, so every
   request of every model gets at least 1 / max_step_gap_s tokens per second while the device
   can give it, and the busiest model still keeps most of the device.
5. Request priority holds across models: only the candidates whose work includes the most urgent
   priority among the busy ones (the lowest number, vLLM's sense) take part in 2. and 3.; the
   others step only by the floor of 4. A request's priority thus means the same on every model
   of the device: an urgent request on one model is not shared down to a sliver by another
   model's crowd of less urgent ones (measured: benchmarks/priority_executor.py), yet those
   still move. With one priority everywhere (the default) this changes nothing.
Ties go to the engine that has waited longest since its last step, then by name. The clock is
the caller's (`now` of pick and charge, in seconds), so the policy is tested with exact times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_URGENT_SLACK_S = 0.05
DEFAULT_MAX_STEP_GAP_S = 0.2


@dataclass(frozen=True)
class Candidate:
    """One engine with work, as the executor sees it before a step."""

    name: str
    is_urgent: bool = False
    demand: int = 1  # sequences its next step serves (its share of the device scales with it)
    priority: int = 0  # the most urgent (lowest) request priority among its work

    def __post_init__(self) -> None:
        if isinstance(self.demand, bool) or not isinstance(self.demand, int) or self.demand < 1:
            raise ValueError(f"demand of {self.name!r} must be an int >= 1, got {self.demand!r}")


@dataclass
class _Account:
    weight: float
    virtual_time: float = 0.0
    last_step: int = -1  # sequence number of its last step; -1 = never stepped
    was_busy: bool = False
    demand: int = 1  # of its last pick: what its next charge is divided by
    waiting_since: float | None = None  # busy and not stepping since then; None: idle or unknown


@dataclass
class StepPolicy:
    """Virtual-time accounts per engine; `pick` chooses, `charge` records what a step cost."""

    urgent_slack_s: float = DEFAULT_URGENT_SLACK_S
    max_step_gap_s: float = DEFAULT_MAX_STEP_GAP_S
    _accounts: dict[str, _Account] = field(default_factory=dict)
    _num_steps: int = 0

    def __post_init__(self) -> None:
        if self.urgent_slack_s < 0:
            raise ValueError(f"urgent_slack_s must be >= 0, got {self.urgent_slack_s}")
        if self.max_step_gap_s <= 0:
            raise ValueError(f"max_step_gap_s must be > 0, got {self.max_step_gap_s}")

    def register(self, name: str, weight: float = 1.0) -> None:
        if weight <= 0:
            raise ValueError(f"weight of {name!r} must be > 0, got {weight}")
        if name in self._accounts:
            raise ValueError(f"engine {name!r} is already registered")
        self._accounts[name] = _Account(weight)

    def remove(self, name: str) -> None:
        self._accounts.pop(name, None)

    def virtual_time(self, name: str) -> float:
        return self._accounts[name].virtual_time

    def pick(self, candidates: Iterable[Candidate], now: float | None = None) -> str | None:
        """The engine to step next among those with work; None when none has any. Without
        `now` the step-rate floor (4. in the module docstring) is not applied."""
        ready = [c for c in candidates if c.name in self._accounts]
        self._mark_idle({c.name for c in ready})
        if not ready:
            return None
        self._rejoin(ready, now)
        starving = self._starving(ready, now)
        if starving is not None:
            self._accounts[starving.name].demand = starving.demand
            return starving.name
        most_urgent = min(c.priority for c in ready)
        contenders = [c for c in ready if c.priority == most_urgent]
        fairest = min(contenders, key=self._order)
        floor = self._accounts[fairest.name].virtual_time
        urgent = [
            c
            for c in contenders
            if c.is_urgent and self._accounts[c.name].virtual_time <= floor + self.urgent_slack_s
        ]
        chosen = min(urgent, key=self._order) if urgent else fairest
        self._accounts[chosen.name].demand = chosen.demand
        return chosen.name

    def charge(self, name: str, step_seconds: float, now: float | None = None) -> None:
        """Record a step of `name` that took `step_seconds` of device time (serving the demand
        its candidate had when it was picked), ending at `now`."""
        if step_seconds < 0:
            raise ValueError(f"step_seconds must be >= 0, got {step_seconds}")
        account = self._accounts.get(name)
        if account is None:
            return  # removed while its step ran
        account.virtual_time += step_seconds / (account.weight * account.demand)
        account.last_step = self._num_steps
        account.waiting_since = now
        self._num_steps += 1

    def _order(self, candidate: Candidate) -> tuple[float, int, str]:
        account = self._accounts[candidate.name]
        return (account.virtual_time, account.last_step, candidate.name)

    def _starving(self, ready: list[Candidate], now: float | None) -> Candidate | None:
        """The candidate waiting longest past max_step_gap_s, if any."""
        if now is None:
            return None
        waits = [
            (now - a.waiting_since, c)
            for c in ready
            if (a := self._accounts[c.name]).waiting_since is not None
        ]
        late = [(wait, c) for wait, c in waits if wait > self.max_step_gap_s]
        return max(late, key=lambda item: (item[0], item[1].name))[1] if late else None

    def _mark_idle(self, busy: set[str]) -> None:
        for name, account in self._accounts.items():
            if name not in busy:
                account.was_busy = False
                account.waiting_since = None

    def _rejoin(self, ready: list[Candidate], now: float | None = None) -> None:
        """Engines that just became busy start at the busy ones' smallest virtual time."""
        busy = [self._accounts[c.name] for c in ready if self._accounts[c.name].was_busy]
        if busy:
            floor = min(a.virtual_time for a in busy)
            for c in ready:
                account = self._accounts[c.name]
                if not account.was_busy:
                    account.virtual_time = max(account.virtual_time, floor)
        for c in ready:
            account = self._accounts[c.name]
            if not account.was_busy or account.waiting_since is None:
                account.waiting_since = now
            account.was_busy = True
