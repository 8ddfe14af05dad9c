"""Arrival tickets and the queue of loads waiting for memory, in arrival order. No torch.

Every request gets a ticket when it arrives (a pipeline request one for all its stages); a smaller
ticket arrived earlier. A load that the ledger cannot admit yet waits here under the ticket of the
request that wants it, with the models whose requests or leases keep its memory (its blockers).
One load serves every request of its model, so the model's place is its oldest waiter's ticket.
The ledger (scheduler/residency.py) decides who goes first; this queue only keeps count.
"""

from __future__ import annotations


class ArrivalQueue:
    """Tickets, and the (ticket, model) pairs that wait for memory with their blockers."""

    def __init__(self) -> None:
        self._last_ticket = 0
        self._waiting: dict[tuple[int, str], tuple[str, ...]] = {}

    def new_ticket(self) -> int:
        """The next arrival number (1, 2, ...): later than every ticket given before."""
        self._last_ticket += 1
        return self._last_ticket

    def wait(self, ticket: int, name: str, blocked_by: tuple[str, ...]) -> None:
        """`ticket`'s request waits for the load of `name`; `blocked_by` keep its memory now."""
        self._waiting[(ticket, name)] = blocked_by

    def withdraw(self, ticket: int, name: str) -> None:
        """That request stopped waiting (gave up, or its load was admitted); a no-op if absent."""
        self._waiting.pop((ticket, name), None)

    def admitted(self, name: str) -> None:
        """The load of `name` was admitted: every request waiting for it is served."""
        for key in [key for key in self._waiting if key[1] == name]:
            del self._waiting[key]

    def ahead_of(self, ticket: int, name: str) -> list[tuple[int, str]]:
        """The other models' loads queued by requests older than `ticket`, oldest first, one
        (ticket, model) per model."""
        first: dict[str, int] = {}
        for waiter, model in sorted(self._waiting):
            if waiter < ticket and model != name:
                first.setdefault(model, waiter)
        return sorted((t, m) for m, t in first.items())

    def is_wanted(self, name: str, ticket: int) -> bool:
        """Whether a load queued by a request older than `ticket` waits for `name`'s memory."""
        return any(t < ticket and name in blockers for (t, _), blockers in self._waiting.items())

    def waiting(self) -> list[tuple[int, str]]:
        """Every (ticket, model) waiting, oldest first."""
        return sorted(self._waiting)
