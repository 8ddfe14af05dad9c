"""`python -m benchmarks.compound` end to end, as a user runs it from the repository root: `--ci`
starts the static deployment (one `swiftserve launch` per model) and swiftserve (one process, the
pipelines in its config), drives a seconds-long version of the seeded trace at each (pipelines,
direct chats and embeddings, the 10x step), stops them and writes the JSON. Every system must
answer every request, and the JSON must hold every figure the README's table and the targets are
made of.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_FIELDS = {
    "requests", "completed", "errors", "rate_limited_429", "completed_per_s", "goodput_per_s", "within_slo",
    "pipeline_goodput_per_s", "direct_goodput_per_s",
    "pipeline", "direct", "per_class", "pipeline_stages_mean_s", "cost", "cold_starts", "spike", "windows",
}  # fmt: skip
LATENCY_FIELDS = {"count", "ok", "p50_s", "p95_s", "p99_s"}
COST_FIELDS = {"memory_gb_s", "memory_pss_gb_s", "reserved_core_s", "used_core_s", "peak_rss_gib"}
COLD_FIELDS = {"pipeline_cold_wait_total_s", "model_loads", "cold_start_requests", "cold_start_wait_total_s"}
TARGET_FIELDS = {
    "pipeline_p95_reduction", "pipeline_p95_met", "goodput_ratio", "goodput_met", "pipeline_goodput_ratio",
    "memory_cost_reduction", "cost_met", "spike_failed", "spike_p95_ratio_max", "spike_met",
}  # fmt: skip


def test_every_system_answers_the_whole_trace_and_the_json_is_complete(tmp_path):
    out = tmp_path / "compound.json"
    cmd = [sys.executable, "-m", "benchmarks.compound", "--ci", "--out", str(out)]
    cmd += ["--workdir", str(tmp_path / "work"), "--figures", str(tmp_path / "figures")]
    # From the root, where -m finds the package: PYTHONSAFEPATH (make test's) would leave the root
    # off sys.path. The benchmark moves the root last itself and keeps it off its servers' sys.path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())

    trace = result["trace"]
    assert trace["requests"] == sum(trace["per_class"].values()) > 0
    assert all(trace["per_class"][c] > 0 for c in ("pipeline", "smol", "gemma", "embed"))
    assert set(result["systems"]) == {"static", "swiftserve"}
    for name, summary in result["systems"].items():
        records = result["records"][name]
        assert len(records) == trace["requests"], name
        failed = [r for r in records if r["outcome"] != "ok"]
        assert not failed, f"{name}: {failed[:3]}"
        assert sorted(r["i"] for r in records) == list(range(trace["requests"]))
        assert SYSTEM_FIELDS <= set(summary), name
        assert summary["completed"] == trace["requests"]
        assert summary["errors"] == summary["rate_limited_429"] == 0
        for group in ("pipeline", "direct"):
            assert LATENCY_FIELDS <= set(summary[group])
            assert 0 < summary[group]["p50_s"] <= summary[group]["p95_s"] <= summary[group]["p99_s"]
        assert COST_FIELDS <= set(summary["cost"])
        assert summary["cost"]["memory_gb_s"] > 0 and summary["cost"]["reserved_core_s"] > 0
        assert COLD_FIELDS <= set(summary["cold_starts"])
        assert {"pipeline", "direct", "all"} <= set(summary["spike"])
        assert summary["windows"] and all("p95_s" in w["all"] for w in summary["windows"])
        assert result["memory_samples"][name], name
    # swiftserve ran the pipelines itself: each carries its stages' timings from the server
    served = [r for r in result["records"]["swiftserve"] if r["cls"] == "pipeline"]
    assert all(set(r["stages_s"]) == {"context", "drafts", "final"} for r in served)
    assert TARGET_FIELDS <= set(result["targets"]["swiftserve"])
    if importlib.util.find_spec("matplotlib") is not None:  # the figures are optional (extra `bench`)
        figures = sorted(Path(p).name for p in result["figures"])
        assert figures == ["compound_cdf.png", "compound_timeline.png"]
