"""Logits processors that run before temperature: logit bias, min_tokens, repetition/presence/frequency.

Each function takes the float32 logits of the rows being processed, shape [num_rows, vocab_size]
and contiguous, modifies them in place, and touches only the (row, token) entries concerned: the
cost follows the number of biased / stop / seen tokens, never num_rows x vocab_size, and a batch
where nobody uses a processor pays nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from swiftserve.model_runner.sampling_state import SamplingState


def needs_processing(state: SamplingState) -> bool:
    """True when any processor below would change this row's logits this step."""
    params = state.params
    return bool(
        params.logit_bias
        or params.repetition_penalty != 1.0
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
        or is_min_tokens_active(state)
    )


def is_min_tokens_active(state: SamplingState) -> bool:
    return bool(state.stop_token_ids) and len(state.output_token_ids) < state.params.min_tokens


def apply_all(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """Run the processors in the vLLM order: bias, min_tokens, repetition, presence/frequency."""
    apply_logit_bias(logits, states)
    apply_min_tokens(logits, states)
    apply_repetition_penalty(logits, states)
    apply_presence_frequency(logits, states)


def apply_logit_bias(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    vocab_size = logits.shape[-1]
    rows: list[int] = []
    token_ids: list[int] = []
    values: list[float] = []
    for row, state in enumerate(states):
        for token_id, value in (state.params.logit_bias or {}).items():
            token_id = int(token_id)  # JSON gives string keys
            if 0 <= token_id < vocab_size:
                rows.append(row)
                token_ids.append(token_id)
                values.append(float(value))
    if rows:
        index = (_long(rows, logits.device), _long(token_ids, logits.device))
        logits.index_put_(
            index, torch.tensor(values, dtype=logits.dtype, device=logits.device), accumulate=True
        )


def apply_min_tokens(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """Stop tokens (eos included) cannot be sampled until min_tokens outputs exist."""
    vocab_size = logits.shape[-1]
    rows: list[int] = []
    token_ids: list[int] = []
    for row, state in enumerate(states):
        if is_min_tokens_active(state):
            ids = [t for t in state.stop_token_ids if 0 <= t < vocab_size]
            rows.extend([row] * len(ids))
            token_ids.extend(ids)
    if rows:
        logits[_long(rows, logits.device), _long(token_ids, logits.device)] = float("-inf")


def apply_repetition_penalty(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """HF style on prompt + output tokens: positive logits divided by the penalty, negative multiplied."""
    rows = [i for i, s in enumerate(states) if s.params.repetition_penalty != 1.0]
    if not rows:
        return
    flat_index, _ = _seen_tokens(
        logits, [states[i].prompt_token_ids + states[i].output_token_ids for i in rows], rows
    )
    penalty = _per_row(logits, [s.params.repetition_penalty for s in states])[flat_index // logits.shape[-1]]
    flat = logits.view(-1)
    values = flat[flat_index]
    flat[flat_index] = torch.where(values > 0, values / penalty, values * penalty)


def apply_presence_frequency(logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
    """OpenAI style on output tokens only: logit -= frequency * count + presence * (count > 0)."""
    rows = [
        i
        for i, s in enumerate(states)
        if s.output_token_ids and (s.params.presence_penalty != 0.0 or s.params.frequency_penalty != 0.0)
    ]
    if not rows:
        return
    flat_index, counts = _seen_tokens(logits, [states[i].output_token_ids for i in rows], rows)
    row = flat_index // logits.shape[-1]
    presence = _per_row(logits, [s.params.presence_penalty for s in states])[row]
    frequency = _per_row(logits, [s.params.frequency_penalty for s in states])[row]
    logits.view(-1)[flat_index] -= frequency * counts + presence


def _seen_tokens(
    logits: torch.Tensor, ids_per_row: list[list[int]], rows: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct (row, token) pairs as flat indices into logits (row * vocab + token), with counts.

    Penalties touch only tokens a row has seen, so the cost follows the number of ids, not
    num_rows x vocab_size (a dense [rows, vocab] mask is ~10 passes over the logits on CPU).
    """
    vocab_size = logits.shape[-1]
    row_of_id: list[int] = []
    for row, ids in zip(rows, ids_per_row, strict=True):
        row_of_id.extend([row] * len(ids))
    token_ids = _long([t for ids in ids_per_row for t in ids], logits.device)
    keys = _long(row_of_id, logits.device) * vocab_size + token_ids
    keys = keys[(token_ids >= 0) & (token_ids < vocab_size)]
    flat_index, counts = torch.unique(keys, return_counts=True)
    return flat_index, counts.to(logits.dtype)


def _per_row(logits: torch.Tensor, values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=logits.dtype, device=logits.device)


def _long(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)
