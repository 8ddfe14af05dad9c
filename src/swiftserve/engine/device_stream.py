"""A CUDA stream per engine, so the executor's lanes can overlap engines on one GPU later.

Each engine's steps are issued on its own stream (created once, after its weights were copied on
the current stream, which it waits for). On the CPU there are no streams: the step runs as is.
Today the executor still runs one main-lane step at a time; with streams in place, overlapping
two engines' steps is a scheduling change, not a rewrite of every engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch


class EngineStream:
    """`run(fn)` calls fn with the engine's stream current (CUDA), or just calls it (CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.stream: torch.cuda.Stream | None = None
        if device.type == "cuda":
            self.stream = torch.cuda.Stream(device=device)
            self.stream.wait_stream(torch.cuda.current_stream(device))  # weights copied before

    def run(self, fn: Callable[[], Any]) -> Any:
        context = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with context:
            return fn()
