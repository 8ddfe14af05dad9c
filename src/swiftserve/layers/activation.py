"""The SwiGLU activation on a fused gate|up projection."""

from __future__ import annotations

import torch
from torch import nn

from swiftserve import kernels


class SiluAndMul(nn.Module):
    def __init__(self, backend: str | None = None) -> None:
        super().__init__()
        self.backend = backend

    def forward(self, gate_up: torch.Tensor) -> torch.Tensor:
        return kernels.silu_and_mul(gate_up, backend=self.backend)
