"""Wall-clock time per native kernel and per torch linear over a run: where a step's time goes.

Wraps the `_C` handle the cpp kernel wrappers share (kernels/cpp_native.py) and
`reference.linear` (the matmuls larger than the small-M kernel takes) with timers. A few hundred
nanoseconds per call of added overhead.
"""

from __future__ import annotations

import time
from collections import defaultdict

from swiftserve.kernels import cpp_native, reference

_MODULES = (cpp_native,)  # every cpp wrapper calls cpp_native._C


class _TimedC:
    def __init__(self, c, seconds: dict) -> None:
        self._c, self._seconds = c, seconds

    def __getattr__(self, name: str):
        attr = getattr(self._c, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._seconds[f"_C.{name}"] += time.perf_counter() - start

        return timed


class OpTimer:
    """with OpTimer() as t: ...; t.seconds maps op name -> seconds spent in it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def __enter__(self) -> OpTimer:
        self._saved = [(m, m._C) for m in _MODULES] + [(reference, reference.linear)]
        for module in _MODULES:
            module._C = _TimedC(module._C, self.seconds)
        linear = reference.linear

        def timed_linear(x, weight, bias=None):
            start = time.perf_counter()
            try:
                return linear(x, weight, bias)
            finally:
                self.seconds[f"torch linear, out_features={weight.shape[0]}"] += time.perf_counter() - start

        reference.linear = timed_linear
        return self

    def __exit__(self, *exc) -> None:
        for module, saved in self._saved[:-1]:
            module._C = saved
        reference.linear = self._saved[-1][1]
