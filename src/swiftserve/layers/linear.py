"""A linear layer whose matmul goes through swiftserve.kernels (small-batch decode GEMV on CPU).

Parameters are named like torch's nn.Linear (weight [out, in], bias [out]), so checkpoints and
the weight loaders see no difference.
"""

from __future__ import annotations

import torch
from torch import nn

from swiftserve import kernels


class Linear(nn.Module):
    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, backend: str | None = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, self.weight, self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )
