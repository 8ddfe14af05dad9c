"""Cumulative engine outputs -> what each choice produced since the last step.

The engine yields every completion's whole text and tokens so far on each step; callers that
stream want only the new part. One tracker serves one request with all its prompts.
"""

from __future__ import annotations

from swiftserve.router.errors import RequestAbortedError
from swiftserve.router.request_types import ChoiceDelta, GenerationStep, Usage

from swiftserve.outputs import CompletionOutput, RequestOutput


class DeltaTracker:
    """Per choice, how much text and how many tokens were already handed out."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._sent_text: dict[int, int] = {}
        self._sent_tokens: dict[int, int] = {}
        self._num_prompt_tokens: dict[int, int] = {}

    def step(self, prompt_index: int, output: RequestOutput) -> GenerationStep:
        """The step of one output; RequestAbortedError when the engine aborted a choice."""
        first = prompt_index not in self._num_prompt_tokens
        self._num_prompt_tokens[prompt_index] = len(output.prompt_token_ids)
        deltas = [self._delta(prompt_index, completion) for completion in output.outputs]
        deltas = [d for d in deltas if d.text or d.token_ids or d.finish_reason]
        if any(delta.finish_reason == "abort" for delta in deltas):
            raise RequestAbortedError("the engine aborted the request")
        prompt_logprobs = output.prompt_logprobs if first else None
        return GenerationStep(prompt_index, deltas, self.usage(), prompt_logprobs)

    def usage(self) -> Usage:
        return Usage(sum(self._num_prompt_tokens.values()), sum(self._sent_tokens.values()))

    def _delta(self, prompt_index: int, completion: CompletionOutput) -> ChoiceDelta:
        index = prompt_index * self.n + completion.index
        sent_text = self._sent_text.get(index, 0)
        sent_tokens = self._sent_tokens.get(index, 0)
        self._sent_text[index] = len(completion.text)
        self._sent_tokens[index] = len(completion.token_ids)
        logprobs = None if completion.logprobs is None else completion.logprobs[sent_tokens:]
        return ChoiceDelta(
            index=index,
            prompt_index=prompt_index,
            text=completion.text[sent_text:],
            token_ids=completion.token_ids[sent_tokens:],
            logprobs=logprobs,
            finish_reason=completion.finish_reason,
        )
