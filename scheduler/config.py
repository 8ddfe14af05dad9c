"""Frozen limits for one model's batch scheduler and block manager."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-step limits of the continuous-batching scheduler.

    max_num_batched_tokens is the token budget of one step: decodes cost 1 each, prefills as
    many prompt tokens as fit (chunked prefill). max_model_len bounds prompt + output; None
    leaves it to the engine (llm_engine.wanted_max_model_len: the model's own limit, as far as
    its KV cache holds one sequence), which sets it before the scheduler is built.
    max_num_waiting bounds the queue (None: unbounded); past it, requests are rejected.
    """

    max_num_seqs: int = 128
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    block_size: int = 16
    enable_prefix_caching: bool = True
    max_num_waiting: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size"):
            value = getattr(self, name)
            if name == "max_model_len" and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_num_waiting is not None and self.max_num_waiting < 0:
            raise ValueError(f"max_num_waiting must be >= 0, got {self.max_num_waiting}")
