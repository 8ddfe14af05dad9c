"""The table of every system's figures that the benchmark prints."""

from __future__ import annotations

from benchmarks.common import print_table


def table(summary: dict) -> None:
    rows = []
    for name, s in summary.items():
        c = s["cost"]
        rows.append({
            "system": name,
            "pipe p50/p95/p99 s": _triple(s["pipeline"]),
            "direct p50/p95/p99 s": _triple(s["direct"]),
            "done/s": s["completed_per_s"],
            "goodput/s all/pipe": f"{s['goodput_per_s']:.2f} / {s['pipeline_goodput_per_s']:.3f}",
            "errors": s["errors"],
            "429s": s["rate_limited_429"],
            "mem GB-s": c["memory_gb_s"],
            "PSS GB-s": c["memory_pss_gb_s"],
            "core-s": c["reserved_core_s"],
            "cold starts n, s": f"{s['cold_starts']['cold_start_requests']:.0f}, "
                                f"{s['cold_starts']['cold_start_wait_total_s']:.1f}",
            "other cores": c["other_core_s"] / c["seconds"] if c["seconds"] else None,
            "spike p95 x": _ratio(s["spike"]),
        })  # fmt: skip
    print_table(rows, list(rows[0]))


def _triple(stats: dict) -> str:
    values = [stats[k] for k in ("p50_s", "p95_s", "p99_s")]
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values)


def _ratio(spike: dict) -> str:
    return " / ".join(
        "-" if spike[g]["ratio"] is None else f"{spike[g]['ratio']:.2f}" for g in ("pipeline", "direct")
    )
