"""Byte counts for the memory budget: parsing "6GiB", printing them back, and the CPU default. No torch.

The default budget on CPU is 60% of the memory the kernel says is available (MemAvailable in
/proc/meminfo: free memory plus what the page cache can give back without swapping), capped by
the cgroup limit when one is set (in a container /proc/meminfo shows the host). The ledger counts
only weights and KV blocks; the other 40% is left for what it does not count: the interpreter and
libraries, activations and sampling buffers of each step, tokenizers, the page cache that snapshot
reads go through, and the rest of the machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from swiftserve.scheduler.residency_types import BudgetError, ModelBudget, Policy

DEFAULT_CPU_FRACTION = 0.6

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_BINARY = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def parse_bytes(value: str | int) -> int:
    """'6GiB', '512MiB', '2.5GB', '1073741824' or an int -> bytes (fractions of a byte dropped).

    Units are case-insensitive: B; K / KB, M / MB, G / GB, T / TB (powers of 1000); KiB, MiB,
    GiB, TiB (of 1024).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a byte count such as 6GiB or 512MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a byte count must be >= 0, got {value}")
        return value
    match = _BYTES.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        units = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
        raise ValueError(f"expected a byte count such as 6GiB or 512MiB (units: {units}), got {value!r}")
    return int(Fraction(match.group(1)) * _UNITS[unit])


def format_bytes(num_bytes: int) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1, to two decimals: '1.5GiB'."""
    if num_bytes < 0:
        return "-" + format_bytes(-num_bytes)
    for unit, scale in _BINARY:
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f}".rstrip("0").rstrip(".") + unit
    return f"{num_bytes}B"


def available_bytes(meminfo: str) -> int:
    """MemAvailable from /proc/meminfo text; kernels before 3.14 lack it: MemFree + Cached."""
    fields = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemAvailable" in fields:
        return fields["MemAvailable"]
    if "MemFree" in fields:
        return fields["MemFree"] + fields.get("Cached", 0)
    raise ValueError("meminfo has neither MemAvailable nor MemFree")


def cpu_budget(
    meminfo: str,
    cgroup_max: str | None = None,
    cgroup_current: str | None = None,
    fraction: float = DEFAULT_CPU_FRACTION,
) -> int:
    """`fraction` of the available memory, capped by a cgroup v2 limit (memory.max minus
    memory.current; 'max' or None means no limit). Pure: the texts are passed in."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    available = available_bytes(meminfo)
    if cgroup_max is not None and cgroup_max.strip() != "max":
        used = int(cgroup_current) if cgroup_current is not None else 0
        available = min(available, max(0, int(cgroup_max) - used))
    return int(available * fraction)


def default_cpu_budget(fraction: float = DEFAULT_CPU_FRACTION) -> int:
    """The CPU budget of this machine (see the module docstring); os.sysconf where /proc is absent."""
    meminfo = _read(Path("/proc/meminfo"))
    if meminfo is None:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        meminfo = f"MemAvailable: {pages // 1024} kB"
    cgroup = Path("/sys/fs/cgroup")
    return cpu_budget(meminfo, _read(cgroup / "memory.max"), _read(cgroup / "memory.current"), fraction)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def check_fits(budget_bytes: int, specs: Sequence[ModelBudget]) -> None:
    """Raise BudgetError unless every model can be resident: a footprint alone, the pinned models
    together, or the largest on-demand model beside all the pinned ones must fit the budget."""
    budget = f"the memory budget {_exact(budget_bytes)}"
    for s in specs:
        if s.footprint > budget_bytes:
            kv = f"{s.kv_floor_blocks} KV blocks of {_exact(s.kv_block_bytes)}"
            weights = f"weights {_exact(s.weight_bytes)} + {kv}"
            raise BudgetError(f"{s.name!r} needs {_exact(s.footprint)} ({weights}), more than {budget}")
    pinned = [s for s in specs if s.policy is Policy.PINNED]
    pinned_bytes = sum(s.footprint for s in pinned)
    if pinned_bytes > budget_bytes:
        names = ", ".join(s.name for s in pinned)
        raise BudgetError(f"the pinned models ({names}) need {_exact(pinned_bytes)}, more than {budget}")
    # Pinned models never leave, so every on-demand model must fit beside all of them.
    on_demand = [s for s in specs if s.policy is Policy.ON_DEMAND]
    largest = max(on_demand, key=lambda s: s.footprint, default=None)
    if largest is not None and largest.footprint + pinned_bytes > budget_bytes:
        raise BudgetError(
            f"{largest.name!r} needs {_exact(largest.footprint)} beside the pinned models'"
            f" {_exact(pinned_bytes)}, more than {budget}: it could never load"
        )


def _exact(num_bytes: int) -> str:
    """format_bytes, with the exact count where rounding hides it (an error compares two numbers)."""
    text = format_bytes(num_bytes)
    return text if parse_bytes(text) == num_bytes else f"{text} ({num_bytes} bytes)"
