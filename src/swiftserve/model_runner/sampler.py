"""Batched sampling: logits of every scheduled sequence in, one token id (and logprobs) per row out.

Per step, in vLLM / OpenAI order:
  1. logit_bias, min_tokens masking of stop tokens, repetition penalty, presence/frequency (penalties.py)
  2. greedy rows (temperature 0): argmax of the processed logits
  3. random rows: temperature, top-k, top-p, min-p, one draw (random_sampling.py)
  4. logprobs, from the raw logits (before any processing), for rows that asked for them

A row whose sampling raises does not take the batch with it: the batch is sampled again row by
row, and the rows that still raise are reported in SamplerOutput.failed for the engine to end
alone.

Fast path: a row that is greedy and needs no processing takes argmax of the raw logits without a
float32 copy. Unseeded random rows share one batched draw; each seeded row is sampled on its own
with its own generator, so its token never depends on what else is in the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from swiftserve.model_runner import penalties
from swiftserve.model_runner.random_sampling import sample_rows
from swiftserve.model_runner.sampling_state import SamplingState
from swiftserve.model_runner.vocab_ops import blocked_topk
from swiftserve.outputs import TokenLogprob

logger = logging.getLogger(__name__)


@dataclass
class SamplerOutput:
    token_ids: list[int]  # one per row
    logprobs: list[TokenLogprob | None]  # per row; None unless params.logprobs is not None
    failed: dict[int, str] = field(default_factory=dict)  # row -> why it could not be sampled (token -1)


class Sampler:
    """Stateless apart from the vocabulary size and the engine's generator; one per model.

    generator draws the unseeded random rows: each engine owns one (seeded from its config), so
    its samples never depend on another model's draws or on torch.manual_seed. None: torch's
    global generator."""

    def __init__(self, vocab_size: int, generator: torch.Generator | None = None) -> None:
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = vocab_size
        self.generator = generator

    def __call__(self, logits: torch.Tensor, states: list[SamplingState]) -> SamplerOutput:
        """logits [num_rows, >= vocab_size] of any float dtype; columns past vocab_size are padding."""
        if logits.dim() != 2 or logits.shape[0] != len(states):
            raise ValueError(f"logits must be [num_rows={len(states)}, vocab], got {tuple(logits.shape)}")
        logits = logits[:, : self.vocab_size]
        try:
            return _sample(logits, states, self.generator)
        except Exception:  # noqa: BLE001 - find the row(s) at fault; the others go on
            logger.exception("sampling a batch of %d rows failed; sampling row by row", len(states))
            return _sample_each(logits, states, self.generator)


def _sample(
    logits: torch.Tensor, states: list[SamplingState], generator: torch.Generator | None = None
) -> SamplerOutput:
    token_ids = _pick_tokens(logits, states, generator)
    token_id_list = token_ids.tolist()
    return SamplerOutput(token_id_list, _logprobs(logits, states, token_ids, token_id_list))


def _sample_each(
    logits: torch.Tensor, states: list[SamplingState], generator: torch.Generator | None = None
) -> SamplerOutput:
    """Row by row, so a row that raises fails alone (seeded rows draw from their own generators,
    so their tokens are what the batched call would have drawn)."""
    result = SamplerOutput([-1] * len(states), [None] * len(states))
    for i, state in enumerate(states):
        try:
            one = _sample(logits[i : i + 1], [state], generator)
        except Exception as exc:  # noqa: BLE001 - reported per row to the engine
            result.failed[i] = f"sampling failed: {exc!r}"
            continue
        result.token_ids[i], result.logprobs[i] = one.token_ids[0], one.logprobs[0]
    return result


def _pick_tokens(
    logits: torch.Tensor, states: list[SamplingState], generator: torch.Generator | None = None
) -> torch.Tensor:
    is_plain = [s.params.temperature == 0.0 and not penalties.needs_processing(s) for s in states]
    if all(is_plain):
        return logits.argmax(dim=-1)
    device = logits.device
    token_ids = torch.empty(len(states), dtype=torch.long, device=device)
    plain = [i for i, p in enumerate(is_plain) if p]
    if plain:
        plain_index = _long(plain, device)
        token_ids[plain_index] = logits[plain_index].argmax(dim=-1)
    work = [i for i, p in enumerate(is_plain) if not p]
    work_states = [states[i] for i in work]
    work_index = _long(work, device)
    work_logits = logits if len(work) == len(states) else logits[work_index]
    # Processors write in place: they get a float32 copy, never the caller's tensor. Random
    # sampling only reads, so without processors float32 logits are used as they are.
    needs_copy = work_logits is logits and any(penalties.needs_processing(s) for s in work_states)
    work_logits = work_logits.to(torch.float32, copy=needs_copy).contiguous()
    penalties.apply_all(work_logits, work_states)
    token_ids[work_index] = _pick_processed(work_logits, work_states, generator)
    return token_ids


def _pick_processed(
    logits: torch.Tensor, states: list[SamplingState], generator: torch.Generator | None = None
) -> torch.Tensor:
    """generator draws the unseeded rows (one batched draw); seeded rows use their own."""
    device = logits.device
    token_ids = torch.empty(len(states), dtype=torch.long, device=device)
    greedy = [i for i, s in enumerate(states) if s.params.temperature == 0.0]
    if greedy:
        greedy_index = _long(greedy, device)
        token_ids[greedy_index] = logits[greedy_index].argmax(dim=-1)
    unseeded = [i for i, s in enumerate(states) if s.params.temperature != 0.0 and s.generator is None]
    seeded = [i for i, s in enumerate(states) if s.params.temperature != 0.0 and s.generator is not None]
    groups = ([unseeded] if unseeded else []) + [[i] for i in seeded]
    for rows in groups:
        group_states = [states[i] for i in rows]
        index = _long(rows, device)
        token_ids[index] = sample_rows(
            logits if len(rows) == len(states) else logits[index],
            torch.tensor([s.params.temperature for s in group_states], device=device),
            _long([s.params.top_k for s in group_states], device),
            torch.tensor([s.params.top_p for s in group_states], device=device),
            torch.tensor([s.params.min_p for s in group_states], device=device),
            _uniform_source(group_states[0].generator or generator, device),
        )
    return token_ids


def _uniform_source(generator: torch.Generator | None, device: torch.device):
    """n -> n uniform numbers on device, from the given generator (the row's own, or the
    engine's) when there is one."""
    if generator is None:
        return lambda n: torch.rand(n, device=device)
    return lambda n: torch.rand(n, generator=generator, device=generator.device).to(device)


def _logprobs(
    logits: torch.Tensor, states: list[SamplingState], token_ids: torch.Tensor, token_id_list: list[int]
) -> list[TokenLogprob | None]:
    """log_softmax of the raw logits: the chosen token's logprob and the top-n alternatives, best first."""
    result: list[TokenLogprob | None] = [None] * len(states)
    rows = [i for i, s in enumerate(states) if s.params.logprobs is not None]
    if not rows:
        return result
    index = _long(rows, logits.device)
    logprobs = torch.log_softmax(logits[index].to(torch.float32), dim=-1)
    chosen = logprobs.gather(1, token_ids[index][:, None]).squeeze(1).tolist()
    top_values, top_ids = blocked_topk(logprobs, max(states[i].params.logprobs for i in rows))
    top_values, top_ids = top_values.tolist(), top_ids.tolist()
    for j, row in enumerate(rows):
        n = states[row].params.logprobs
        top = list(zip(top_ids[j][:n], top_values[j][:n], strict=True))
        result[row] = TokenLogprob(token_id_list[row], chosen[j], top)
    return result


def _long(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)
