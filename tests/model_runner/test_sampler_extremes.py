"""Mixed batches of extreme and ordinary sampling parameters against a float64 reference.

The reference builds each row's distribution by sorting (temperature, then top-k, top-p over the
top-k set, min-p relative to the best token), the definition the sampler's fast paths implement,
with ties taken as float32 sees them.
A temperature too small for 1 / T to be finite in float32 (the fuzzer's 1e-40) is its limit: the
best token. A row whose sampling raises fails alone; its neighbours get their tokens.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from swiftserve.model_runner import sampler as sampler_module
from swiftserve.model_runner.sampler import Sampler, SamplingState
from swiftserve.sampling_params import SamplingParams

VOCAB = 24
TINY = (5e-324, 1e-45, 1e-40, 3e-39, 1e-30)  # 1 / T overflows float32 for all but the last
ORDINARY = (0.3, 0.7, 1.0, 1.7)
HUGE = (1e6, 1e38)


def reference_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """float64 probabilities of each token for one row."""
    z = logits.double()
    best = int(z.argmax())
    if params.temperature == 0 or 1 / params.temperature > 1e30:
        probs = torch.zeros_like(z)
        probs[best] = 1.0
        return probs
    values, order = (z / params.temperature).sort(descending=True)
    keep = torch.ones_like(values, dtype=torch.bool)
    if params.top_k > 0:
        keep[params.top_k :] = False
    p = torch.where(keep, values, -math.inf).softmax(dim=0)
    # Ties as float32 sees them (at T = 1e38 every weight is exactly 1): a token's mass before
    # it is that of the tokens strictly more likely, and a tie with the best passes min-p.
    p32 = p.float()
    mass_before = torch.stack([p[p32 > q].sum() for q in p32])
    keep &= (mass_before < params.top_p) | (p32 == p32[0])
    keep &= p32 >= params.min_p * p32[0]
    kept = torch.where(keep, values, -math.inf).softmax(dim=0)
    probs = torch.zeros_like(z)
    probs[order] = kept
    return probs


def _random_params(rng: random.Random) -> SamplingParams:
    kind = rng.choice(("greedy", "tiny", "ordinary", "huge"))
    temperature = {
        "greedy": 0.0,
        "tiny": rng.choice(TINY),
        "ordinary": rng.choice(ORDINARY),
        "huge": rng.choice(HUGE),
    }[kind]
    return SamplingParams(
        temperature=temperature,
        top_k=rng.choice((0, 0, 1, 3, VOCAB, VOCAB + 5)),
        top_p=rng.choice((1.0, 1.0, 0.5, 0.9, 1e-9)),
        min_p=rng.choice((0.0, 0.0, 0.1, 1.0)),
        seed=rng.choice((None, rng.randrange(1000))),
    )


def _state(params: SamplingParams) -> SamplingState:
    generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
    return SamplingState(params, [1, 2], generator=generator)


@pytest.mark.parametrize("seed", range(12))
def test_random_mixed_batches_sample_inside_the_reference_support(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    sampler = Sampler(VOCAB)
    for _ in range(25):
        rows = rng.randint(1, 9)
        states = [_state(_random_params(rng)) for _ in range(rows)]
        logits = torch.randn(rows, VOCAB) * rng.choice((0.1, 3.0, 30.0))
        out = sampler(logits, states)
        assert out.failed == {}
        for row, (state, token) in enumerate(zip(states, out.token_ids, strict=True)):
            probs = reference_probs(logits[row], state.params)
            assert probs[token] > 0, (state.params, token, probs)
            if probs.max() == 1.0:
                assert token == int(logits[row].argmax())


@pytest.mark.parametrize("temperature", TINY)
@pytest.mark.parametrize("filters", [{}, {"top_k": 5}, {"top_p": 0.5}, {"min_p": 0.2}])
def test_tiny_temperatures_pick_the_best_token(temperature, filters):
    logits = torch.randn(4, 192, generator=torch.Generator().manual_seed(3)) * 10
    states = [_state(SamplingParams(temperature=temperature, **filters)) for _ in range(4)]
    out = Sampler(192)(logits, states)
    assert out.token_ids == logits.argmax(dim=-1).tolist() and out.failed == {}


def test_an_extreme_row_leaves_its_neighbours_distribution_alone():
    """Chi-square of an ordinary row's draws, batched with tiny- and huge-temperature rows."""
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(5)) * 2
    ordinary = SamplingParams(temperature=0.8, top_p=0.9)
    states = [
        _state(SamplingParams(temperature=1e-40)),
        _state(ordinary),
        _state(SamplingParams(temperature=1e38, min_p=0.1)),
    ]
    torch.manual_seed(0)
    sampler, draws = Sampler(VOCAB), 6000
    counts = torch.zeros(VOCAB, dtype=torch.float64)
    for _ in range(draws):
        out = sampler(logits, states)
        assert out.token_ids[0] == int(logits[0].argmax())
        counts[out.token_ids[1]] += 1
    probs = reference_probs(logits[1], ordinary)
    support = probs > 0
    assert counts[~support].sum() == 0
    expected = probs[support] * draws
    chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
    dof = int(support.sum()) - 1
    assert chi2 < dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3  # 99.9% quantile


def test_a_row_that_raises_fails_alone(monkeypatch):
    real = sampler_module.sample_rows

    def faulty(logits, temperature, *args):
        if bool((temperature == 0.123).any()):
            raise IndexError("index 192 is out of bounds for dimension 1 with size 192")
        return real(logits, temperature, *args)

    monkeypatch.setattr(sampler_module, "sample_rows", faulty)
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(1))
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.123),
        SamplingParams(temperature=0.9, seed=17),
        SamplingParams(temperature=0.5),
    ]
    out = Sampler(VOCAB)(logits, [_state(p) for p in params])
    assert set(out.failed) == {1} and "out of bounds" in out.failed[1]
    assert out.token_ids[1] == -1 and out.token_ids[0] == int(logits[0].argmax())
    alone = Sampler(VOCAB)(logits[2:3], [_state(params[2])])  # seeded: the same draw as batched
    assert out.token_ids[2] == alone.token_ids[0]
    assert 0 <= out.token_ids[3] < VOCAB


@pytest.mark.parametrize("temperature", [math.inf, math.nan, -1e-9])
def test_non_finite_or_negative_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=temperature)
