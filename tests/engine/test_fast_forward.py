"""Fast-forward on a real (tiny, random) engine: forced tokens join the sequence at once and run
as one chunk; outputs stay valid, count against max_tokens, stop at stop strings, leave free rows
alone; requests with logprobs are not fast-forwarded; nothing leaks."""

from __future__ import annotations

import re

import pytest

from swiftserve import EngineConfig, SamplingParams
from swiftserve.engine.llm_engine import LLMEngine
from swiftserve.structured_outputs import StructuredOutputs

from .tiny_chat import make_tiny_chat

pytest.importorskip("llguidance")

FORCED = "The customer_identifier is [0-9]{2}, the order_reference is [a-c]{2}"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm_dir):
    return make_tiny_chat(tmp_path_factory.mktemp("tiny") / "chat", smollm_dir)


def _engine(tiny_dir, fast_forward: bool, **scheduler) -> LLMEngine:
    config = EngineConfig.of(
        str(tiny_dir), kv_cache_memory=8 << 20, grammar_fast_forward=fast_forward, **scheduler
    )
    return LLMEngine(config)


def _regex(pattern: str = FORCED, **kwargs) -> SamplingParams:
    kwargs = {"temperature": 0, "max_tokens": 60, **kwargs}
    return SamplingParams(structured_outputs=StructuredOutputs(regex=pattern), **kwargs)


def _drain(engine: LLMEngine, requests: dict[str, SamplingParams]) -> tuple[dict, int]:
    for i, (request_id, params) in enumerate(requests.items()):
        engine.add_request(request_id, f"prompt number {i}", params)
    done, steps = {}, 0
    while engine.has_unfinished():
        steps += 1
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.outputs[0]
    engine.scheduler.check_integrity()
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks and not engine.requests
    return done, steps


def test_forced_text_runs_as_chunks_and_stays_valid(tiny_dir) -> None:
    results = {}
    for ff in (True, False):
        engine = _engine(tiny_dir, ff)
        done, steps = _drain(engine, {"x": _regex()})
        results[ff] = (done["x"], steps, engine.num_forced_tokens)
    (fast, fast_steps, forced), (slow, slow_steps, none) = results[True], results[False]
    for out in (fast, slow):
        assert re.fullmatch(FORCED, out.text) and out.finish_reason == "stop"
    assert none == 0 and forced > 0
    # One step per sampled token (plus the prefill's), the forced ones riding along as chunks.
    assert fast_steps == len(fast.token_ids) - forced
    assert slow_steps == len(slow.token_ids)
    assert fast_steps < slow_steps


def test_forced_tokens_are_the_canonical_tokenization(tiny_dir) -> None:
    engine = _engine(tiny_dir, True)
    done, _ = _drain(engine, {"x": _regex("[ab]: the_quick_brown_fox_jumps")})
    out = done["x"]
    tokenize = engine.tokenizer.tokenizer
    assert re.fullmatch("[ab]: the_quick_brown_fox_jumps", out.text)
    # The first token was sampled (a or b); everything after it was forced, spelled canonically.
    rest = tokenize.decode(out.token_ids[1:])
    assert out.token_ids[1:] == tokenize.encode(rest, add_special_tokens=False).ids
    assert engine.num_forced_tokens == len(out.token_ids) - 1


def test_max_tokens_cuts_inside_the_forced_tokens(tiny_dir) -> None:
    engine = _engine(tiny_dir, True)
    done, steps = _drain(engine, {"x": _regex(max_tokens=4)})
    out = done["x"]
    assert len(out.token_ids) == 4 and out.finish_reason == "length" and steps == 1
    assert FORCED.startswith(out.text) and engine.num_forced_tokens == 3


def test_a_stop_string_among_the_forced_tokens_ends_it_there(tiny_dir) -> None:
    engine = _engine(tiny_dir, True)
    done, steps = _drain(engine, {"x": _regex(stop=["identifier"])})
    out = done["x"]
    assert out.finish_reason == "stop" and out.text == "The customer_" and steps == 1


def test_logprobs_requests_are_not_fast_forwarded(tiny_dir) -> None:
    engine = _engine(tiny_dir, True)
    done, steps = _drain(engine, {"x": _regex(logprobs=1)})
    out = done["x"]
    assert engine.num_forced_tokens == 0 and steps == len(out.token_ids)
    assert len(out.logprobs) == len(out.token_ids) and re.fullmatch(FORCED, out.text)


def test_free_rows_are_unchanged_and_small_budgets_chunk_the_forced_tokens(tiny_dir) -> None:
    requests = {
        "free": SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
        "forced": _regex(),
        "choice": SamplingParams(
            temperature=0, max_tokens=30, structured_outputs=StructuredOutputs(choice=("alpha beta gamma",))
        ),
    }
    alone, _ = _drain(_engine(tiny_dir, False), {"free": requests["free"]})
    wide, _ = _drain(_engine(tiny_dir, True), requests)
    narrow, _ = _drain(_engine(tiny_dir, True, max_num_batched_tokens=3), requests)
    assert wide["free"].token_ids == narrow["free"].token_ids == alone["free"].token_ids
    assert wide["forced"].token_ids == narrow["forced"].token_ids
    assert re.fullmatch(FORCED, narrow["forced"].text)
    assert wide["choice"].text == narrow["choice"].text == "alpha beta gamma"


def test_aborting_a_request_with_forced_tokens_pending_frees_everything(tiny_dir) -> None:
    engine = _engine(tiny_dir, True)
    engine.add_request("x", "hello", _regex())
    engine.add_request("y", "there", _regex())
    engine.step()  # x and y sampled their first tokens; their forced tokens wait, uncomputed
    assert engine.num_forced_tokens > 0
    engine.abort_request("x")
    done, _ = _drain(engine, {})
    assert re.fullmatch(FORCED, done["y"].text)
