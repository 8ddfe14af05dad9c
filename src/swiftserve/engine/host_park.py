"""A parked chat model's weights: kept in host memory between an unload and a reload.

The host tier's bookkeeping is scheduler/host_tier.py; this is what it holds (vLLM's sleep mode
level 1 is the reference):
- On a CPU the host and the device are the same RAM: nothing moves. The module is simply kept
  (its KV cache released, engine/memory.release_keeping_weights), and a reload builds an engine
  around it: no file read, no parse, no copy.
- On CUDA every parameter and buffer is copied into pinned host memory and the device copies are
  freed; a reload is one `.to(device, non_blocking=True)` per tensor. The copies are issued on the
  current stream of the building thread, and the engine's own stream waits for that stream when
  it is created (engine/device_stream.py), so its first step sees the weights in place. The
  pinned pages are freed by the caching host allocator only once their copy has completed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from swiftserve.model_runner.model_runner import CausalLM


@dataclass
class ParkedWeights:
    """A model whose weights are in host memory; `device` is where they go back to."""

    model: CausalLM
    device: torch.device

    @property
    def is_on_host(self) -> bool:
        """Whether the weights were moved off the device (CUDA) rather than kept in place (CPU)."""
        return self.device.type != "cpu"


def park_weights(model: CausalLM) -> ParkedWeights:
    """Moves the weights to pinned host memory on CUDA; keeps them as they are on a CPU."""
    device = _device_of(model)
    if device.type == "cuda":
        _to_pinned_host(model)
        torch.cuda.empty_cache()  # the device blocks go back to the driver, not just to torch's cache
    return ParkedWeights(model, device)


def restore_weights(parked: ParkedWeights) -> CausalLM:
    """The model with its weights back on their device (one async copy per tensor on CUDA)."""
    if parked.is_on_host:
        # Module.to keeps every Parameter object (param.data is swapped), so tied weights stay tied.
        parked.model.to(parked.device, non_blocking=True)
    return parked.model


def _to_pinned_host(model: CausalLM) -> None:
    for tensor in _tensors(model):
        pinned = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=True)
        pinned.copy_(tensor.data)
        tensor.data = pinned


def _tensors(model: CausalLM) -> Iterator[torch.Tensor]:
    """Every parameter and buffer once (a tied weight is one Parameter in two modules)."""
    yield from model.parameters()
    yield from model.buffers()


def _device_of(model: CausalLM) -> torch.device:
    return next(model.parameters()).device
