"""Turning one sampled token into a completion's new state: ids, text, logprobs, stop; and
recording a request's prompt logprobs as its prefill chunks are scored."""

from __future__ import annotations

from swiftserve.engine.request import Completion, Request
from swiftserve.engine.stop_checker import StopResult, check_stop, emittable_length
from swiftserve.model_runner.prompt_logprobs import PromptLogprobs
from swiftserve.outputs import TokenLogprob


def append_token(
    completion: Completion, token_id: int, logprob: TokenLogprob | None, max_model_len: int
) -> None:
    """Record token_id; decide whether the completion stops, and what text it may show so far.

    A constrained completion also stops when its grammar is complete (the engine has accepted the
    token into it already). While running, `text` holds back any tail that could still become a
    stop string, so streamed text is never taken back.
    """
    seq, params = completion.seq, completion.state.params
    seq.append_token(token_id)
    completion.state.output_token_ids.append(token_id)
    if completion.logprobs is not None and logprob is not None:
        completion.logprobs.append(logprob)
    new_text = completion.detokenizer.append(token_id)
    full_text = completion.detokenizer.text
    result = check_stop(
        params,
        token_id,
        seq.num_output_tokens,
        completion.state.stop_token_ids,
        full_text,
        len(new_text),
        seq.num_tokens,
        max_model_len,
    )
    grammar = completion.state.grammar
    if result.finish_reason is None and grammar is not None and grammar.is_finished():
        result = StopResult("stop")  # the constraint is complete: nothing more may follow
    if result.finish_reason is None:
        completion.text = full_text[: emittable_length(full_text, params.stop)]
        return
    if result.truncate_to is None:
        full_text += completion.detokenizer.flush()
    completion.text = full_text if result.truncate_to is None else full_text[: result.truncate_to]
    completion.finish_reason, completion.stop_reason = result.finish_reason, result.stop_reason


def append_prompt_logprobs(request: Request, completion: Completion, scored: PromptLogprobs) -> None:
    """Extend request.prompt_logprobs with a chunk's entries. A sequence recomputed after
    preemption scores positions again: those already held are kept. Once every prompt token has
    its entry the sequence may use prefix-cache hits again."""
    entries = request.prompt_logprobs
    if entries is None:  # not asked for: the runner scores no prompt then
        return
    held = len(entries) - scored.first_position  # entries of this chunk already recorded
    assert held >= 0, "prompt logprob chunks arrive in position order"
    entries.extend(scored.entries[held:])
    if len(entries) == len(request.prompt_token_ids):
        completion.seq.needs_prompt_logprobs = False
