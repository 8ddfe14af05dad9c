"""The compound benchmark's two figures (matplotlib, optional): latency through the spike per
system, and the latency CDFs of pipelines and direct calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.compound.workload import DIRECT, Shape


def figures(result: dict, shape: Shape, out_dir: Path) -> list[str]:
    """Latency through the spike per system (each request, and P95 per 10 s), and latency CDFs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures (pip install matplotlib)")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    systems = list(result["systems"])
    fig, axes = plt.subplots(len(systems), 1, figsize=(10, 2.6 * len(systems)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], systems, strict=True):
        records = result["records"][name]
        for group, classes, color in (("pipeline", ("pipeline",), "tab:red"), ("direct", DIRECT, "tab:blue")):
            ok = [r for r in records if r["cls"] in classes and r["outcome"] == "ok"]
            ax.scatter([r["t"] for r in ok], [r["latency"] for r in ok], s=4, alpha=0.3, color=color)
            win = result["systems"][name]["windows"]
            xs = [w["start_s"] + w["width_s"] / 2 for w in win if w[group]["p95_s"] is not None]
            ys = [w[group]["p95_s"] for w in win if w[group]["p95_s"] is not None]
            ax.plot(xs, ys, marker="o", color=color, label=f"{group} P95 per 10 s")
            bad = [r for r in records if r["cls"] in classes and r["outcome"] != "ok"]
            if bad:
                ax.scatter(
                    [r["t"] for r in bad], [r["latency"] for r in bad], marker="x", color="black", s=20
                )
        ax.axvspan(shape.spike, shape.spike_end, color="orange", alpha=0.15, label="10x spike")
        ax.set_yscale("log")
        ax.set_ylabel("latency (s)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("arrival time in the trace (s)")
    fig.tight_layout()
    timeline = out_dir / "compound_timeline.png"
    fig.savefig(timeline, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (group, classes) in zip(
        axes, (("pipeline", ("pipeline",)), ("direct calls", DIRECT)), strict=True
    ):
        for name in systems:
            lat = sorted(
                r["latency"] for r in result["records"][name] if r["cls"] in classes and r["outcome"] == "ok"
            )
            if lat:
                ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=name)
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(group)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    cdf = out_dir / "compound_cdf.png"
    fig.savefig(cdf, dpi=110)
    plt.close(fig)
    return [str(timeline), str(cdf)]
