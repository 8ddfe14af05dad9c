"""Byte counts: parse_bytes, format_bytes, the CPU default budget and the config-time fit check."""

from __future__ import annotations

import pytest
from swiftserve.scheduler.memory_budget import (
    available_bytes,
    check_fits,
    cpu_budget,
    default_cpu_budget,
    format_bytes,
    parse_bytes,
)
from swiftserve.scheduler.residency_types import BudgetError, ModelBudget, Policy


@pytest.mark.parametrize(
    "text, expected",
    [
        ("6GiB", 6 * 2**30),
        ("512MiB", 512 * 2**20),
        ("2.5GB", 2_500_000_000),
        ("1073741824", 1073741824),
        (1073741824, 1073741824),
        (0, 0),
        ("0", 0),
        ("7B", 7),
        ("1kb", 1000),
        ("1KiB", 1024),
        ("3 mib", 3 * 2**20),
        ("  1TB ", 10**12),
        ("2tib", 2 * 2**40),
        ("1.5KiB", 1536),
        ("0.1KiB", 102),  # 102.4: fractions of a byte are dropped
        (".5GiB", 2**29),
        ("1.5b", 1),
        ("6G", 6 * 10**9),  # the CLI's old shorthand: decimal, like GB
        ("64k", 64_000),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "GiB", "6Gi", "6 gigs", "-1GiB", "1e9", "6GiB extra", "1,024", "0x10", "nan"]
)
def test_parse_bytes_rejects_bad_strings_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="expected a byte count such as 6GiB or 512MiB") as info:
        parse_bytes(bad)
    assert repr(bad) in str(info.value) and "KiB" in str(info.value)


@pytest.mark.parametrize("bad", [-1, True, 1.5, None])
def test_parse_bytes_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        parse_bytes(bad)


@pytest.mark.parametrize(
    "num_bytes, text",
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1KiB"),
        (1536, "1.5KiB"),
        (6 * 2**30, "6GiB"),
        (123456789, "117.74MiB"),
        (3 * 2**40, "3TiB"),
        (-2048, "-2KiB"),
    ],
)
def test_format_bytes(num_bytes, text):
    assert format_bytes(num_bytes) == text


def test_format_then_parse_round_trips_whole_units():
    for n in (1, 1024, 5 * 2**20, 6 * 2**30, 3 * 2**40):
        assert parse_bytes(format_bytes(n)) == n


# -- the CPU default --------------------------------------------------------------------------------

MEMINFO = """MemTotal:       24683584 kB
MemFree:        20000000 kB
MemAvailable:   10000000 kB
Buffers:             572 kB
Cached:          1000000 kB
HugePages_Total:       0
"""


def test_available_memory_is_memavailable():
    assert available_bytes(MEMINFO) == 10000000 * 1024


def test_old_kernels_without_memavailable_use_free_plus_cached():
    old = "\n".join(line for line in MEMINFO.splitlines() if not line.startswith("MemAvailable"))
    assert available_bytes(old) == (20000000 + 1000000) * 1024


def test_meminfo_without_any_free_figure_is_an_error():
    with pytest.raises(ValueError, match="MemAvailable"):
        available_bytes("MemTotal: 1 kB\n")


def test_cpu_budget_is_sixty_percent_of_available():
    assert cpu_budget(MEMINFO) == int(10000000 * 1024 * 0.6)
    assert cpu_budget(MEMINFO, fraction=0.5) == 10000000 * 512
    assert cpu_budget(MEMINFO, cgroup_max="max\n", cgroup_current="123\n") == int(10000000 * 1024 * 0.6)


def test_a_cgroup_limit_caps_the_cpu_budget():
    # memory.max 4 GiB, 1 GiB already used by the container: 3 GiB available, 60% of it.
    assert cpu_budget(MEMINFO, f"{4 * 2**30}\n", f"{2**30}\n") == int(3 * 2**30 * 0.6)
    # a limit above what the kernel says is available changes nothing
    assert cpu_budget(MEMINFO, f"{2**50}\n", "0\n") == int(10000000 * 1024 * 0.6)
    assert cpu_budget(MEMINFO, "100\n", "200\n") == 0  # over its limit already


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_cpu_budget_rejects_a_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        cpu_budget(MEMINFO, fraction=fraction)


def test_default_cpu_budget_of_this_machine_is_positive():
    assert default_cpu_budget() > 0


# -- the config-time check --------------------------------------------------------------------------


def model(name: str, weights: int, policy: str = "on-demand", floor: int = 0, block: int = 0) -> ModelBudget:
    return ModelBudget(name, weights, block, floor, Policy(policy))


def test_everything_that_fits_passes():
    check_fits(100, [model("p", 40, "pinned"), model("q", 20, "pinned"), model("a", 40), model("b", 30)])
    check_fits(100, [])


def test_a_footprint_alone_over_the_budget_names_the_model_and_the_numbers():
    with pytest.raises(BudgetError) as info:
        check_fits(2**30, [model("big", 2**30, floor=2, block=2**20)])
    assert str(info.value) == (
        "'big' needs 1GiB (1075838976 bytes) (weights 1GiB + 2 KV blocks of 1MiB),"
        " more than the memory budget 1GiB"
    )
    assert isinstance(info.value, ValueError)


def test_the_pinned_models_together_over_the_budget():
    with pytest.raises(BudgetError) as info:
        check_fits(100, [model("p", 60, "pinned"), model("q", 41, "pinned")])
    assert str(info.value) == "the pinned models (p, q) need 101B, more than the memory budget 100B"


def test_an_on_demand_model_that_could_never_load_beside_the_pinned_ones():
    with pytest.raises(BudgetError) as info:
        check_fits(100, [model("p", 60, "pinned"), model("a", 30), model("b", 41)])
    assert str(info.value) == (
        "'b' needs 41B beside the pinned models' 60B, more than the memory budget 100B: it could never load"
    )
