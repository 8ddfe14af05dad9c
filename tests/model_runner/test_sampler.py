"""Sampler: greedy/random picks, filters, penalties, seeds and logprobs against hand-made references."""

from __future__ import annotations

import math

import pytest
import torch

from swiftserve.model_runner import penalties
from swiftserve.model_runner.sampler import Sampler, SamplingState
from swiftserve.sampling_params import SamplingParams


def _state(prompt=(1, 2), outputs=(), stop=(), seed=None, **kwargs) -> SamplingState:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return SamplingState(
        SamplingParams(seed=seed, **kwargs), list(prompt), list(outputs), frozenset(stop), generator
    )


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def _chi2_999(dof: int) -> float:
    """99.9% quantile of chi-square (Wilson-Hilferty): a correct sampler fails 1 run in 1000, and
    the seeds are fixed, so each test is deterministic."""
    z = 3.09
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_greedy_is_argmax_and_ignores_padding_columns(dtype):
    torch.manual_seed(0)
    logits = torch.randn(5, 40).to(dtype)
    logits[:, 32:] = 100.0  # padding columns past the tokenizer vocab must never win
    out = Sampler(32)(logits, [_state(temperature=0.0) for _ in range(5)])
    assert out.token_ids == logits[:, :32].float().argmax(-1).tolist()
    assert out.logprobs == [None] * 5


def test_top_k_one_and_tiny_top_p_are_greedy():
    torch.manual_seed(1)
    logits = torch.randn(6, 1000) * 3
    expected = logits.argmax(-1).tolist()
    sampler = Sampler(1000)
    for _ in range(5):
        assert sampler(logits, [_state(top_k=1, temperature=1.5) for _ in range(6)]).token_ids == expected
        assert sampler(logits, [_state(top_p=1e-6) for _ in range(6)]).token_ids == expected
        mixed = [_state(top_k=1), _state(top_p=1e-6), _state(temperature=0.0)] * 2
        assert sampler(logits, mixed).token_ids == expected


def test_top_k_and_top_p_only_draw_from_the_kept_set():
    torch.manual_seed(2)
    logits = torch.randn(1, 500) * 2
    probs = logits.softmax(-1)[0]
    order = probs.argsort(descending=True)
    # nucleus for top_p=0.5: the smallest prefix of sorted tokens whose mass reaches 0.5
    cum = probs[order].cumsum(0)
    nucleus = set(order[: int((cum < 0.5).sum()) + 1].tolist())
    top5 = set(order[:5].tolist())
    sampler = Sampler(500)
    batch = logits.expand(2000, 500)
    seen_k = set(sampler(batch, [_state(top_k=5) for _ in range(2000)]).token_ids)
    seen_p = set(sampler(batch, [_state(top_p=0.5) for _ in range(2000)]).token_ids)
    assert seen_k == top5
    assert seen_p == nucleus


def test_top_p_on_flat_rows_keeps_only_the_nucleus():
    # A near-flat 49k row: the nucleus for top_p=0.9 is most of the vocabulary.
    torch.manual_seed(3)
    logits = torch.randn(4, 49152) * 0.01
    probs = logits.softmax(-1)
    out = Sampler(49152)(logits.clone(), [_state(top_p=0.9) for _ in range(4)])
    for row, token in enumerate(out.token_ids):
        sorted_probs, order = probs[row].sort(descending=True)
        rank = int((order == token).nonzero())
        assert float(sorted_probs[:rank].sum()) < 0.9


def test_min_p_drops_tokens_below_the_threshold():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05]]))
    # min_p 0.3: keep p >= 0.12 -> tokens 0, 1, 2
    seen = set(Sampler(5)(logits.expand(3000, 5), [_state(min_p=0.3) for _ in range(3000)]).token_ids)
    assert seen == {0, 1, 2}


def test_temperature_distribution_chi_square():
    torch.manual_seed(4)
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2]])
    n = 20000
    out = Sampler(8)(logits.expand(n, 8), [_state(temperature=0.7) for _ in range(n)])
    counts = torch.bincount(torch.tensor(out.token_ids), minlength=8).float()
    assert _chi_square(counts, (logits[0] / 0.7).softmax(-1)) < _chi2_999(7)
    # The same counts must reject the wrong temperature: the test has the power to fail.
    assert _chi_square(counts, logits[0].softmax(-1)) > 10 * _chi2_999(7)


def test_combined_filters_distribution_chi_square():
    torch.manual_seed(5)
    logits = torch.tensor([[3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0]])
    n = 20000
    # top_k 8 keeps 0..7; top_p 0.97 of that (at temperature 1.2) drops the tail; all on one row.
    params = dict(temperature=1.2, top_k=8, top_p=0.97)
    out = Sampler(10)(logits.expand(n, 10), [_state(**params) for _ in range(n)])
    probs = (logits[0, :8] / 1.2).softmax(-1)
    keep = (probs.cumsum(0) - probs) < 0.97
    expected = torch.zeros(10)
    expected[:8] = torch.where(keep, probs, 0.0)
    expected /= expected.sum()
    counts = torch.bincount(torch.tensor(out.token_ids), minlength=10).float()
    kept = expected > 0
    assert counts[~kept].sum() == 0
    assert 3 <= int(kept.sum()) < 8
    assert _chi_square(counts[kept], expected[kept]) < _chi2_999(int(kept.sum()) - 1)


def _nucleus_probs(
    logits: torch.Tensor, temperature: float, top_p: float, min_p: float = 0.0
) -> torch.Tensor:
    """Reference: sort, keep while the mass before a token < top_p, then min_p, renormalise."""
    probs = (logits / temperature).softmax(-1)
    sorted_probs, order = probs.sort(descending=True)
    keep = (sorted_probs.cumsum(0) - sorted_probs) < top_p
    keep &= sorted_probs >= min_p * sorted_probs[0]
    expected = torch.zeros_like(probs)
    expected[order[keep]] = sorted_probs[keep]
    return expected / expected.sum()


@pytest.mark.parametrize("max_rounds", [None, 0])
@pytest.mark.parametrize(("top_p", "min_p"), [(0.8, 0.0), (0.9, 0.1)])
def test_top_p_without_top_k_distribution_chi_square(monkeypatch, max_rounds, top_p, min_p):
    """The rejection sampler (and, with 0 rounds, its sort fallback) matches the nucleus exactly."""
    from swiftserve.model_runner import random_sampling

    if max_rounds is not None:
        monkeypatch.setattr(random_sampling, "_MAX_REJECTION_ROUNDS", max_rounds)
    torch.manual_seed(10)
    logits = torch.tensor([2.0, 1.8, 1.5, 1.0, 0.7, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -3.0])
    expected = _nucleus_probs(logits, 0.9, top_p, min_p)
    kept = expected > 0
    assert 3 <= int(kept.sum()) < 12
    n = 20000
    out = Sampler(12)(
        logits.expand(n, 12), [_state(temperature=0.9, top_p=top_p, min_p=min_p) for _ in range(n)]
    )
    counts = torch.bincount(torch.tensor(out.token_ids), minlength=12).float()
    assert counts[~kept].sum() == 0
    assert _chi_square(counts[kept], expected[kept]) < _chi2_999(int(kept.sum()) - 1)


def test_penalties_match_a_hand_computed_reference():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0, 1.0]])
    state = _state(
        prompt=[0, 1],
        outputs=[3, 3, 4],
        repetition_penalty=2.0,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logit_bias={5: -1.0},
    )
    processed = logits.clone()
    penalties.apply_all(processed, [state])
    # token: 0 prompt(+) 1 prompt(-) 2 unseen 3 out x2 (+) 4 out x1 (-) 5 biased
    expected = [
        2.0 / 2,
        -1.0 * 2,
        0.5,
        3.0 / 2 - 0.25 * 2 - 0.5,
        -2.0 * 2 - 0.25 * 1 - 0.5,
        1.0 - 1.0,
    ]
    torch.testing.assert_close(processed, torch.tensor([expected]))


def test_penalties_only_touch_rows_that_ask():
    torch.manual_seed(6)
    logits = torch.randn(3, 10)
    states = [_state(outputs=[1]), _state(outputs=[1], frequency_penalty=1.0), _state(outputs=[1])]
    processed = logits.clone()
    penalties.apply_all(processed, states)
    torch.testing.assert_close(processed[[0, 2]], logits[[0, 2]])
    assert processed[1, 1] == logits[1, 1] - 1.0


def test_penalties_change_the_greedy_choice():
    logits = torch.tensor([[1.0, 0.9, 0.0]])
    sampler = Sampler(3)
    assert sampler(logits, [_state(temperature=0.0, outputs=[0])]).token_ids == [0]
    assert sampler(logits, [_state(temperature=0.0, outputs=[0], presence_penalty=0.2)]).token_ids == [1]
    assert sampler(logits, [_state(temperature=0.0, prompt=[0], repetition_penalty=1.2)]).token_ids == [1]


def test_logit_bias_forces_a_token():
    torch.manual_seed(7)
    logits = torch.randn(8, 300)
    states = [
        _state(temperature=t, logit_bias={"123": 100.0} if i % 2 else {123: 100.0})
        for i, t in enumerate([0.0, 1.0, 0.5, 2.0] * 2)
    ]
    assert Sampler(300)(logits, states).token_ids == [123] * 8
    # A very negative bias bans the argmax.
    best = int(logits[0].argmax())
    assert Sampler(300)(logits[:1], [_state(temperature=0.0, logit_bias={best: -100.0})]).token_ids[0] != best


def test_min_tokens_blocks_stop_tokens():
    logits = torch.zeros(1, 10)
    logits[0, 7] = 50.0  # eos is by far the most likely token
    logits[0, 2] = 49.0  # a stop_token_id, the next most likely
    sampler = Sampler(10)
    for temperature in (0.0, 1.0):
        early = _state(temperature=temperature, outputs=[1], stop={7, 2}, min_tokens=3)
        assert sampler(logits, [early]).token_ids[0] not in (7, 2)
        done = _state(temperature=temperature, outputs=[1, 1, 1], stop={7, 2}, min_tokens=3)
        assert sampler(logits, [done]).token_ids[0] in ((7,) if temperature == 0.0 else (7, 2))


def _sample_sequence(seed: int, companions: int, position: int, steps: int = 6, **params) -> list[int]:
    """Tokens drawn for one seeded row over several steps, surrounded by unseeded/other rows."""
    torch.manual_seed(1234 + companions)  # the companions' draws differ between calls
    sampler = Sampler(5000)
    target = _state(seed=seed, **params)
    others = [_state(top_p=0.8) for _ in range(companions)] + [_state(seed=99, temperature=0.7)]
    tokens = []
    gen = torch.Generator().manual_seed(42)  # the same logits for the target row every call
    for _ in range(steps):
        logits_target = torch.randn(1, 5000, generator=gen)
        states = others[:position] + [target] + others[position:]
        rows = [logits_target[0] if s is target else torch.randn(5000) for s in states]
        token = sampler(torch.stack(rows), states).token_ids[position]
        target.output_token_ids.append(token)
        tokens.append(token)
    return tokens


@pytest.mark.parametrize("params", [{}, {"top_p": 0.9}, {"top_k": 40, "temperature": 0.8}, {"min_p": 0.05}])
def test_seeded_rows_are_reproducible_regardless_of_batch(params):
    alone = _sample_sequence(seed=7, companions=0, position=0, **params)
    assert alone == _sample_sequence(seed=7, companions=0, position=0, **params)
    assert alone == _sample_sequence(seed=7, companions=5, position=3, **params)
    assert alone == _sample_sequence(seed=7, companions=12, position=12, **params)
    assert alone != _sample_sequence(seed=8, companions=0, position=0, **params)


def test_logprobs_are_raw_log_softmax_with_sorted_top():
    torch.manual_seed(8)
    logits = torch.randn(3, 50).to(torch.bfloat16)
    states = [
        _state(temperature=0.0, logprobs=5),
        _state(temperature=0.5, top_k=3, logprobs=0, presence_penalty=1.0, outputs=[4]),
        _state(logprobs=None),
    ]
    out = Sampler(50)(logits, states)
    reference = torch.log_softmax(logits.float(), -1)
    assert out.logprobs[2] is None
    for row in (0, 1):
        entry = out.logprobs[row]
        assert entry.token_id == out.token_ids[row]
        assert entry.logprob == pytest.approx(float(reference[row, entry.token_id]), abs=1e-5)
    assert out.logprobs[1].top == []
    top = out.logprobs[0].top
    assert [t for t, _ in top] == reference[0].topk(5).indices.tolist()
    assert [v for _, v in top] == pytest.approx(reference[0].topk(5).values.tolist(), abs=1e-5)
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:], strict=False))
    assert out.logprobs[0].logprob == pytest.approx(top[0][1])  # greedy: the chosen token is the best


def test_mixed_batch_keeps_rows_apart():
    torch.manual_seed(9)
    logits = torch.randn(4, 64)
    logits[1, 10] = 30.0
    states = [
        _state(temperature=0.0),
        _state(top_k=1),
        _state(temperature=0.0, logit_bias={3: 100.0}),
        _state(seed=3, top_p=0.95),
    ]
    out = Sampler(64)(logits, states)
    assert out.token_ids[:3] == [int(logits[0].argmax()), 10, 3]
    assert 0 <= out.token_ids[3] < 64


def test_rejects_mismatched_rows():
    with pytest.raises(ValueError):
        Sampler(10)(torch.zeros(2, 10), [_state()])
    assert math.isfinite(Sampler(10)(torch.zeros(1, 10), [_state(logprobs=1)]).logprobs[0].logprob)


def test_top_p_distribution_on_a_wide_vocab_chi_square():
    """Wide rows exercise the block-bound acceptance of the top-p rejection sampler."""
    torch.manual_seed(11)
    width = 5000
    logits = torch.randn(width) - 8.0
    peaks = torch.tensor([4.0, 3.6, 3.3, 3.0, 2.6, 2.0, 1.0])
    peak_ids = torch.tensor([17, 900, 901, 2500, 4095, 4999, 3333])
    logits[peak_ids] = peaks
    expected = _nucleus_probs(logits, 1.0, 0.85)
    kept = expected > 0
    assert 4 <= int(kept.sum()) <= 7
    sampler, chunk = Sampler(width), 1000
    batch = logits.expand(chunk, width).contiguous()
    token_ids = []
    for _ in range(10):
        token_ids += sampler(batch, [_state(top_p=0.85) for _ in range(chunk)]).token_ids
    counts = torch.bincount(torch.tensor(token_ids), minlength=width).float()
    assert counts[~kept].sum() == 0
    assert _chi_square(counts[kept], expected[kept]) < _chi2_999(int(kept.sum()) - 1)
