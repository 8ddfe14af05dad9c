"""What this CPU computes natively, as torch's own CPU kernels see it.

A CPU without AVX512-BF16 or AMX has no bf16 multiply: torch (oneDNN) then runs a bf16 matmul
through an emulated path at about a seventh of its float32 speed (17 against 115-135 GFLOP/s on a
2-core AVX2 EPYC), so large bf16 matmuls are better widened to float32 there (cpp_linear).
"""

from __future__ import annotations

from functools import cache

import torch


@cache
def has_native_bf16_matmul() -> bool:
    """Whether bf16 matmuls run on bf16 hardware here (AVX512-BF16 or AMX tiles).

    torch exposes the probes only privately; where they are gone this answers True, the
    behaviour before the probe existed (bf16 matmuls stay bf16)."""
    probes = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    answers = [bool(probe()) for probe in probes if callable(probe)]
    return any(answers) if answers else True
