"""Turning one sampled token into a completion's new state: ids, text, logprobs, stop."""

from __future__ import annotations

from swiftserve.engine.request import Completion
from swiftserve.engine.stop_checker import check_stop, emittable_length
from swiftserve.outputs import TokenLogprob


def append_token(
    completion: Completion, token_id: int, logprob: TokenLogprob | None, max_model_len: int
) -> None:
    """Record token_id; decide whether the completion stops, and what text it may show so far.

    While running, `text` holds back any tail that could still become a stop string, so streamed
    text is never taken back.
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
    if result.finish_reason is None:
        completion.text = full_text[: emittable_length(full_text, params.stop)]
        return
    if result.truncate_to is None:
        full_text += completion.detokenizer.flush()
    completion.text = full_text if result.truncate_to is None else full_text[: result.truncate_to]
    completion.finish_reason, completion.stop_reason = result.finish_reason, result.stop_reason
