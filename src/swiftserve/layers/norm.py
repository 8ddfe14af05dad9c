"""RMSNorm with the residual add fused in, as every pre-norm decoder layer uses it."""

from __future__ import annotations

import torch
from torch import nn

from swiftserve import kernels


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, backend: str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.backend = backend

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (normalized, residual). With a residual, x + residual becomes the new residual."""
        if residual is None:
            return kernels.rms_norm(x, self.weight, self.eps, backend=self.backend), x
        residual = kernels.fused_add_rms_norm(x, residual, self.weight, self.eps, backend=self.backend)
        return x, residual
