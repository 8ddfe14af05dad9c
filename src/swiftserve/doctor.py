"""`swiftserve doctor` / `--version`: what this install can run, so a slow path is never a surprise."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def swiftserve_version() -> str:
    try:
        return version("swiftserve")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown (not installed)"


def report() -> str:
    """The version, torch, and every kernel backend with what it runs on or why it cannot."""
    import torch

    from swiftserve.kernels.dispatch import backend_statuses, describe

    lines = [
        f"swiftserve {swiftserve_version()}",
        f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}",
        "kernel backends:",
    ]
    for status in backend_statuses():
        mark = "yes" if status.is_available else "no "
        lines.append(f"  [{mark}] {status.name:<10} {'/'.join(status.devices):<8} {status.detail}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    lines += [f"models on {d} run: {describe(d)}" for d in devices]
    return "\n".join(lines)
