"""The bookkeeping view of one generated sequence: token ids, progress and blocks. No torch."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One token stream. `token_ids` holds the prompt followed by the outputs so far.

    num_computed_tokens counts the leading tokens whose keys and values are in the KV cache;
    the scheduler feeds the model the rest (a whole or chunked prefill, or a single decode token).
    """

    seq_id: int
    token_ids: list[int]
    num_prompt_tokens: int
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at admission
    block_ids: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)  # of the leading full blocks, chained
    num_preemptions: int = 0
    # Lower runs earlier (vLLM's sense): the waiting queue's order and, reversed, the order of
    # preemption (waiting_queue.py, batch_scheduler.py).
    priority: int = 0
    arrival: int = -1  # the waiting queue's arrival number (-1: never queued)
    # Every prompt position must run through the model (prompt logprobs score each one), so
    # admission skips prefix-cache hits while this is set; the engine clears it once scored.
    needs_prompt_logprobs: bool = False

    @classmethod
    def from_prompt(cls, seq_id: int, prompt_token_ids: list[int], priority: int = 0) -> Sequence:
        return cls(
            seq_id=seq_id,
            token_ids=list(prompt_token_ids),
            num_prompt_tokens=len(prompt_token_ids),
            priority=priority,
        )

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
