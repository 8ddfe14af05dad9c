"""When a completion stops, and how much of its text may be streamed before it does.

Call check_stop once per generated token, after the detokenizer has appended the token's text.
Stop strings are searched only in the tail that the new text could have completed:

    text = ..........................|<- num_new_chars ->|
                     |<- len(stop) - 1 ->|                  a stop string ending in the new text
                     ^ search from here                     starts no earlier than this

While streaming, emit only text[:emittable_length(text, stop)]: a suffix that could still grow into
a stop string is held back, so a stop string is never partly sent and then cut.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from swiftserve.sampling_params import SamplingParams


@dataclass(frozen=True)
class StopResult:
    finish_reason: str | None = None  # "stop", "length" or None while running
    stop_reason: str | int | None = None  # the stop string or stop token id; None for eos and length
    truncate_to: int | None = None  # keep text[:truncate_to]; None keeps all the text


RUNNING = StopResult()


def check_stop(
    params: SamplingParams,
    token_id: int,
    num_output_tokens: int,
    stop_token_ids: Collection[int],
    text: str,
    num_new_chars: int,
    num_total_tokens: int | None = None,
    max_model_len: int | None = None,
) -> StopResult:
    """Whether the completion ends with `token_id`, its num_output_tokens-th output token.

    text is all output text so far, of which the last num_new_chars characters came with this token.
    stop_token_ids holds eos (unless ignore_eos) and params.stop_token_ids. Nothing stops before
    min_tokens outputs exist. With max_model_len given, reaching it (num_total_tokens = prompt +
    output) also finishes with "length".
    """
    if num_output_tokens < params.min_tokens:
        return RUNNING
    if token_id in stop_token_ids:
        # Like vLLM: a stop token's own text (empty for skipped special tokens) is dropped.
        truncate_to = (
            None if params.include_stop_str_in_output or not num_new_chars else len(text) - num_new_chars
        )
        stop_reason = token_id if token_id in params.stop_token_ids else None
        return StopResult("stop", stop_reason, truncate_to)
    if params.stop and num_new_chars:
        found = find_stop_string(text, num_new_chars, params.stop)
        if found is not None:
            index, stop = found
            end = index + len(stop) if params.include_stop_str_in_output else index
            return StopResult("stop", stop, end)
    if num_output_tokens >= params.max_tokens:
        return StopResult("length")
    if max_model_len is not None and num_total_tokens is not None and num_total_tokens >= max_model_len:
        return StopResult("length")
    return RUNNING


def find_stop_string(text: str, num_new_chars: int, stops: Sequence[str]) -> tuple[int, str] | None:
    """The stop string that completes first in the new text: (start index, stop), or None.

    "First" is by end position, then by start: what a character-by-character check would see, so
    the result does not depend on how the text was split into tokens. With stops "bcd" and
    "abcdef", "abcdef" arriving in one token stops at "bcd", as it would arriving in pieces.
    """
    best: tuple[int, int, str] | None = None  # (end, start, stop)
    new_start = len(text) - num_new_chars
    for stop in stops:
        index = text.find(stop, max(0, new_start - len(stop) + 1))
        if index >= 0 and (best is None or (index + len(stop), index) < best[:2]):
            best = (index + len(stop), index, stop)
    return None if best is None else (best[1], best[2])


def emittable_length(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the prefix of text that is safe to stream: the longest suffix of text that is a
    proper prefix of some stop string is withheld (it may still become that stop string)."""
    withheld = 0
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), withheld, -1):
            if text.endswith(stop[:size]):
                withheld = size
                break
    return len(text) - withheld
