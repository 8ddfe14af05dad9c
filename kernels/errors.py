"""The error a kernel backend raises for inputs it has no kernel for."""

from __future__ import annotations


class UnsupportedInputError(ValueError):
    """`backend` has no `op` kernel for these (valid) inputs: a dtype, head size or layout it was not
    built for. Raised before any work is done, so the dispatcher can run the next backend instead;
    naming the backend (backend="cpp") turns it into the caller's error."""

    def __init__(self, op: str, backend: str, reason: str) -> None:
        super().__init__(f"kernel backend {backend!r} cannot run {op}: {reason}")
        self.op, self.backend, self.reason = op, backend, reason
