"""A request's state inside the engine: its n completions, each one sequence."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from swiftserve.engine.detokenizer import IncrementalDetokenizer
from swiftserve.model_runner.sampler import SamplingState
from swiftserve.outputs import CompletionOutput, RequestOutput, TokenLogprob
from swiftserve.sampling_params import SamplingParams
from swiftserve.scheduler.sequence import Sequence


@dataclass(eq=False)
class Completion:
    request_id: str
    index: int
    seq: Sequence
    state: SamplingState
    detokenizer: IncrementalDetokenizer
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None

    def to_output(self) -> CompletionOutput:
        return CompletionOutput(
            index=self.index,
            text=self.text,
            token_ids=self.seq.output_token_ids,
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
        )


@dataclass(eq=False)
class Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    completions: list[Completion] = field(default_factory=list)
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    # With params.prompt_logprobs: the entries scored so far, [None] first (outputs.py).
    prompt_logprobs: list[TokenLogprob | None] | None = None
    error: str | None = None  # why it failed alone in a step (outputs.RequestOutput.error)
    priority: int = 0  # lower runs earlier (its sequences carry it too: scheduler/sequence.py)

    @property
    def finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.completions)

    @property
    def is_scoring_prompt(self) -> bool:
        """Whether prompt logprobs were asked for and some are still being computed."""
        return self.prompt_logprobs is not None and len(self.prompt_logprobs) < len(self.prompt_token_ids)

    def to_output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=[c.to_output() for c in self.completions],
            finished=self.finished,
            num_cached_tokens=max((c.seq.num_cached_tokens for c in self.completions), default=0),
            prompt_logprobs=list(self.prompt_logprobs) if self.prompt_logprobs is not None else None,
            error=self.error,
        )
