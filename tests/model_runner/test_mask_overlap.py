"""The mask fill beside the forward, without a model: the fill thread (one, in order, closed for
good), the free-core rule, and the start / join / apply of a step's masks, which must give the
same logits whether the fill ran beside or here, and account for the time it hid."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import pytest
import torch

from swiftserve.model_runner.grammar import overlap_policy
from swiftserve.model_runner.grammar.bitmask import num_words
from swiftserve.model_runner.grammar.mask_worker import MaskFillWorker, MaskWorkerClosedError
from swiftserve.model_runner.grammar.overlap_policy import OverlapPolicy, has_free_core
from swiftserve.model_runner.grammar.step_masks import MaskTimings, apply_masks, settle, start_masks
from swiftserve.model_runner.sampling_state import SamplingState
from swiftserve.sampling_params import SamplingParams

VOCAB = 70  # three words, the last one partly padding


class AllowOnly:
    """A matcher that allows exactly `tokens`."""

    def __init__(self, *tokens: int) -> None:
        self.tokens = tokens


class FakeBackend:
    """Fills each row from its AllowOnly; `gate`, when set, holds every fill until it is released."""

    vocab_size = VOCAB

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.threads: list[str] = []

    def fill_bitmask(self, rows, bitmask: torch.Tensor) -> None:
        self.threads.append(threading.current_thread().name)
        if self.gate is not None and not self.gate.wait(timeout=5):
            raise TimeoutError("the fill was never released: it ran on the caller's thread")
        bitmask.zero_()
        for matcher, k in rows:
            for token in matcher.tokens:
                word, bit = divmod(token, 32)
                value = int(bitmask[k, word]) & 0xFFFFFFFF | (1 << bit)
                bitmask[k, word] = value - (1 << 32) if value >= 1 << 31 else value  # as int32


def _states(*grammars) -> list[SamplingState]:
    return [SamplingState(SamplingParams(), [1], grammar=g) for g in grammars]


def _masked_columns(logits: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(row != float("-inf")).flatten().tolist() for row in logits]


# -- the fill thread --------------------------------------------------------------------------------
def test_the_worker_runs_jobs_in_order_on_one_thread_and_closes_for_good() -> None:
    worker = MaskFillWorker()
    assert not worker.is_started
    futures = [worker.submit(lambda i=i: (i, threading.current_thread())) for i in range(5)]
    results = [f.result(timeout=5) for f in futures]
    assert [i for i, _ in results] == [0, 1, 2, 3, 4]
    threads = {t for _, t in results}
    assert len(threads) == 1 and next(iter(threads)) is not threading.current_thread()
    worker.close()
    worker.close()  # idempotent
    assert not next(iter(threads)).is_alive()
    with pytest.raises(MaskWorkerClosedError):
        worker.submit(lambda: None)


def test_close_waits_for_the_job_in_progress_and_never_starts_a_thread_unused() -> None:
    worker = MaskFillWorker()
    started, finished = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        time.sleep(0.05)
        finished.set()

    future = worker.submit(job)
    assert started.wait(5)
    worker.close()
    assert finished.is_set() and future.done()
    idle = MaskFillWorker()
    idle.close()
    assert not idle.is_started and idle.is_closed


# -- whether a core is free -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cpus", "threads", "free"), [(2, 2, False), (2, 1, True), (1, 1, False), (16, 8, True), (4, 6, False)]
)
def test_a_core_is_free_only_past_the_forward_team(cpus: int, threads: int, free: bool) -> None:
    assert has_free_core(cpus, threads) is free


def test_auto_follows_this_threads_team_and_logs_each_choice_once(monkeypatch, caplog) -> None:
    monkeypatch.setattr(overlap_policy, "process_cpu_count", lambda: 2)
    team = [2]
    monkeypatch.setattr(overlap_policy.torch, "get_num_threads", lambda: team[0])
    policy = OverlapPolicy("auto")
    with caplog.at_level(logging.INFO, logger=overlap_policy.logger.name):
        decisions = [policy.should_overlap() for _ in range(3)]
        team[0] = 1
        decisions += [policy.should_overlap() for _ in range(3)]
    assert decisions == [False] * 3 + [True] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "grammar masks fill after the forward (no core free): 2 CPUs, forward on 2 threads",
        "grammar masks fill beside the forward: 2 CPUs, forward on 1 threads",
    ]


def test_on_and_off_ignore_the_cores_and_a_bad_mode_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(overlap_policy, "process_cpu_count", lambda: 1)
    assert OverlapPolicy("on").should_overlap() and not OverlapPolicy("off").should_overlap()
    with pytest.raises(ValueError, match="sometimes"):
        OverlapPolicy("sometimes")


# -- a step's masks -----------------------------------------------------------------------------------
def test_no_constrained_row_costs_nothing() -> None:
    timings, worker = MaskTimings(), MaskFillWorker()
    assert start_masks(_states(None, None), None, worker) is None
    assert start_masks([], FakeBackend(), worker) is None
    logits = torch.zeros(2, VOCAB)
    apply_masks(logits, None, timings)
    assert torch.equal(logits, torch.zeros(2, VOCAB)) and timings.num_steps == 0
    assert not worker.is_started


def test_the_fill_runs_beside_the_caller_until_the_join() -> None:
    gate = threading.Event()
    backend, worker, timings = FakeBackend(gate), MaskFillWorker(), MaskTimings()
    pending = start_masks(_states(AllowOnly(3), None, AllowOnly(0, 69)), backend, worker)
    assert pending is not None and isinstance(pending.fill, concurrent.futures.Future)
    time.sleep(0.02)  # the "forward": the fill waits on the gate meanwhile
    assert not pending.fill.done()
    gate.set()
    logits = torch.zeros(3, VOCAB)
    apply_masks(logits, pending, timings)
    assert _masked_columns(logits) == [[3], list(range(VOCAB)), [0, 69]]
    assert backend.threads[0].startswith("mask-fill")
    assert (timings.num_steps, timings.num_overlapped_steps, timings.num_constrained_rows) == (1, 1, 2)
    assert len(timings.join_wait_s) == len(timings.hidden_s) == 1
    assert timings.hidden_s[0] == pytest.approx(max(0.0, timings.fill_s[0] - timings.join_wait_s[0]))
    assert timings.hidden_s[0] > 0.01  # the fill waited ~20 ms for the gate, behind the "forward"
    worker.close()


def test_beside_and_here_mask_alike_with_every_row_constrained() -> None:
    grammars = [AllowOnly(1), AllowOnly(30, 31, 32), AllowOnly(63, 64, 65), AllowOnly()]
    results = []
    for worker in (MaskFillWorker(), None):
        timings = MaskTimings()
        logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(0))
        apply_masks(logits, start_masks(_states(*grammars), FakeBackend(), worker), timings)
        results.append((logits, timings))
        if worker is not None:
            worker.close()
    (beside, t_beside), (here, t_here) = results
    assert torch.equal(beside, here)
    assert _masked_columns(here) == [[1], [30, 31, 32], [63, 64, 65], []]
    assert (t_beside.num_overlapped_steps, t_here.num_overlapped_steps) == (1, 0)
    assert t_beside.num_constrained_rows == t_here.num_constrained_rows == 4
    assert not t_here.join_wait_s and len(t_here.fill_s) == 1
    assert t_here.fill_per_row_s[0] == pytest.approx(t_here.fill_s[0] / 4)


def test_settle_waits_out_a_fill_whose_step_failed() -> None:
    gate, worker = threading.Event(), MaskFillWorker()
    pending = start_masks(_states(AllowOnly(5)), FakeBackend(gate), worker)
    assert pending is not None and isinstance(pending.fill, concurrent.futures.Future)
    threading.Timer(0.03, gate.set).start()
    settle(pending)
    assert pending.fill.done() and pending.fill.result() > 0.0
    settle(None)
    worker.close()


def test_a_fill_that_raises_surfaces_at_the_join() -> None:
    class Broken(FakeBackend):
        def fill_bitmask(self, rows, bitmask) -> None:
            raise RuntimeError("fill broke")

    worker = MaskFillWorker()
    pending = start_masks(_states(AllowOnly(1)), Broken(), worker)
    with pytest.raises(RuntimeError, match="fill broke"):
        apply_masks(torch.zeros(1, VOCAB), pending, MaskTimings())
    settle(pending)  # a failed fill is settled too: no raise
    worker.close()


def test_bitmask_width_matches_the_vocabulary() -> None:
    pending = start_masks(_states(AllowOnly(0)), FakeBackend(), None)
    assert pending is not None and tuple(pending.bitmask.shape) == (1, num_words(VOCAB)) == (1, 3)
