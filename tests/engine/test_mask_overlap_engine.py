"""The mask fill beside the forward on a real (tiny, random) engine: the same greedy tokens as the
fill after the forward, with free and constrained rows mixed, rows finishing and aborted mid-run;
nothing leaks, the fill thread stops with the engine, and a forward that raises leaves no fill
running on a matcher."""

from __future__ import annotations

import re
import threading
import time

import pytest

from swiftserve import EngineConfig, SamplingParams
from swiftserve.engine.llm_engine import LLMEngine
from swiftserve.structured_outputs import StructuredOutputs

from .tiny_chat import make_tiny_chat

pytest.importorskip("llguidance")

REGEX = "[a-c]{2,6}"
CHOICES = ("alpha", "beta", "gamma delta")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm_dir):
    return make_tiny_chat(tmp_path_factory.mktemp("tiny") / "chat", smollm_dir)


def _engine(tiny_dir, overlap: str) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(tiny_dir), kv_cache_memory=8 << 20, grammar_mask_overlap=overlap))


def _params(kind: str, max_tokens: int = 12) -> SamplingParams:
    spec = {"regex": StructuredOutputs(regex=REGEX), "choice": StructuredOutputs(choice=CHOICES)}.get(kind)
    return SamplingParams(temperature=0, max_tokens=max_tokens, structured_outputs=spec)


def _run(engine: LLMEngine, kinds: list[str]) -> list[list[int]]:
    for i, kind in enumerate(kinds):
        engine.add_request(str(i), f"request {i} wants {kind}", _params(kind))
    done: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.outputs[0].token_ids
    return [done[str(i)] for i in range(len(kinds))]


def _all_free(engine: LLMEngine) -> bool:
    engine.scheduler.check_integrity()
    stats = engine.stats()
    return stats.num_free_blocks == stats.num_total_blocks and not engine.requests


def test_beside_and_after_give_the_same_greedy_tokens(tiny_dir) -> None:
    kinds = ["regex", "free", "choice", "regex", "free"]
    outputs, timings = {}, {}
    for mode in ("on", "off"):
        engine = _engine(tiny_dir, mode)
        outputs[mode] = _run(engine, kinds)
        timings[mode] = engine.runner.mask_timings
        assert _all_free(engine)
        engine.close()
    assert outputs["on"] == outputs["off"]
    on, off = timings["on"], timings["off"]
    assert on.num_steps == off.num_steps > 0 and on.num_constrained_rows == off.num_constrained_rows
    assert (on.num_overlapped_steps, off.num_overlapped_steps) == (on.num_steps, 0)
    assert len(on.join_wait_s) == len(on.hidden_s) == on.num_steps and not off.join_wait_s


def test_constrained_outputs_are_valid_with_the_fill_beside(tiny_dir) -> None:
    engine = _engine(tiny_dir, "on")
    ids = _run(engine, ["regex", "choice", "choice"])
    texts = [engine.tokenizer.tokenizer.decode(t) for t in ids]
    assert re.fullmatch(REGEX, texts[0]) and texts[1] in CHOICES and texts[2] in CHOICES
    engine.close()


def test_rows_finishing_and_aborted_mid_run_leak_nothing_and_the_thread_stops(tiny_dir) -> None:
    engine = _engine(tiny_dir, "on")
    engine.add_request("short", "a", _params("choice"))
    engine.add_request("long", "b", _params("regex", max_tokens=30))
    engine.add_request("free", "c", _params("free", max_tokens=30))
    engine.add_request("gone", "d", _params("regex", max_tokens=30))
    engine.step()
    engine.step()
    engine.abort_request("gone")
    while engine.has_unfinished():
        engine.step()
        if "long" in engine.requests and engine.runner.mask_timings.num_steps >= 4:
            engine.abort_request("long")
    assert _all_free(engine)
    threads = _fill_threads()
    assert engine.runner.mask_worker.is_started and threads
    engine.close()
    assert not any(t.is_alive() for t in threads)
    # Closed, the runner still steps: its fills run after the forward.
    before = engine.runner.mask_timings.num_overlapped_steps
    assert _run(engine, ["choice"]) and engine.runner.mask_timings.num_overlapped_steps == before


def _fill_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mask-fill")]


def test_a_forward_that_raises_waits_for_its_fill(tiny_dir, monkeypatch) -> None:
    engine = _engine(tiny_dir, "on")
    engine.add_request("x", "hello", _params("regex"))
    engine.step()  # the backend exists from the first constrained step on
    backend = engine.grammars.backend
    finished: list[float] = []
    real_fill = backend.fill_bitmask

    def slow_fill(rows, bitmask) -> None:
        time.sleep(0.05)
        real_fill(rows, bitmask)
        finished.append(time.perf_counter())

    def broken_forward(*args, **kwargs):
        raise RuntimeError("forward broke")

    monkeypatch.setattr(backend, "fill_bitmask", slow_fill)
    monkeypatch.setattr(engine.runner, "model", broken_forward)
    with pytest.raises(RuntimeError, match="forward broke"):
        engine.step()
    raised = time.perf_counter()
    assert len(finished) == 1 and finished[0] <= raised
    engine.close()
