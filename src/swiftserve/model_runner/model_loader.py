"""Builds a model on its device and dtype and fills its weights (from a checkpoint, a snapshot,
or random).

From a snapshot the model is a skeleton on the `meta` device whose parameters and rotary tables
become the snapshot's tensors (loader/snapshot_modules.py): no float32 build, no cast, no copy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from swiftserve.kernels.dispatch import describe, preferred_backends
from swiftserve.loader.dtypes import torch_dtype
from swiftserve.loader.model_kind import kind_model
from swiftserve.loader.model_source import ModelSource
from swiftserve.loader.snapshot_cache import load_through_cache
from swiftserve.loader.snapshot_errors import SnapshotMismatchError
from swiftserve.loader.snapshot_modules import build_from_snapshot, meta_skeleton
from swiftserve.models.gemma3 import Gemma3ForCausalLM
from swiftserve.models.gemma3_config import GEMMA3_ARCHITECTURES, GEMMA3_MODEL_TYPES, Gemma3Config
from swiftserve.models.llama import LlamaForCausalLM
from swiftserve.models.llama_config import LlamaConfig

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return device


def serving_torch_dtype(source: ModelSource, requested: str, device: torch.device) -> torch.dtype:
    """The torch dtype `source` is served in on `device` when `requested` is asked ("auto" too)."""
    return torch_dtype(source.serving_dtype(requested), device)


def load_model(
    source: ModelSource,
    dtype: torch.dtype,
    device: torch.device,
    load_format: str = "auto",
    backend: str | None = None,
    seed: int = 0,
    snapshot_cache: Path | None = None,
) -> LlamaForCausalLM | Gemma3ForCausalLM:
    """The chat model of a Hugging Face folder or a snapshot file (then load_format is moot: it
    has weights). With load_format "dummy" the folder needs only its config (random weights).

    With snapshot_cache (a cache folder), a folder's model loads from its automatic snapshot
    there, written on the first load and rebuilt when stale or corrupt (loader/snapshot_cache.py).
    """
    folder, hf_config = source.path, source.hf_config
    if source.snapshot is not None:
        return _load_snapshot(folder, source.snapshot.kind, hf_config, dtype, device, backend)
    if snapshot_cache is not None and load_format != "dummy":
        return _load_through_cache(folder, hf_config, dtype, device, backend, Path(snapshot_cache))
    return _load_source(folder, hf_config, dtype, device, load_format, backend, seed)


def built_num_parameters(hf_config: dict) -> int:
    """Elements of every parameter of the model the config builds (tied ones once, buffers not):
    a skeleton on meta has the exact shapes a load allocates, and allocates nothing."""
    model_class, config_class = _model_classes(hf_config)
    with meta_skeleton():
        model = model_class(config_class.from_hf(hf_config))
    return sum(param.numel() for param in model.parameters())


def _load_source(
    folder: Path,
    hf_config: dict,
    dtype: torch.dtype,
    device: torch.device,
    load_format: str,
    backend: str | None,
    seed: int,
) -> LlamaForCausalLM | Gemma3ForCausalLM:
    """Built in float32 on the device, cast, then filled tensor by tensor from the checkpoint."""
    model_class, config_class = _model_classes(hf_config)
    cfg = config_class.from_hf(hf_config)
    log_kernel_backend(folder.name, device, dtype, backend)
    with torch.device(device):
        model = model_class(cfg, backend=backend).to(dtype)
    if load_format == "dummy":
        _init_random(model, seed)
    else:
        from swiftserve.loader import iter_weights

        model.load_weights(iter_weights(folder))
    return model.eval()


def _load_through_cache(
    folder: Path, hf_config: dict, dtype: torch.dtype, device: torch.device, backend: str | None, cache: Path
) -> LlamaForCausalLM | Gemma3ForCausalLM:
    return load_through_cache(
        cache,
        folder,
        "chat",
        dtype,
        from_source=lambda: _load_source(folder, hf_config, dtype, device, "auto", backend, 0),
        from_snapshot=lambda path: _load_snapshot(path, "chat", hf_config, dtype, device, backend),
    )


def _load_snapshot(
    path: Path, kind: str, hf_config: dict, dtype: torch.dtype, device: torch.device, backend: str | None
) -> LlamaForCausalLM | Gemma3ForCausalLM:
    """The skeleton on meta (nothing allocated), its tensors the snapshot's (views on the CPU)."""
    if kind != "chat":
        raise SnapshotMismatchError(path, f"{kind_model(kind)}, expected a chat model")
    model_class, config_class = _model_classes(hf_config)
    cfg = config_class.from_hf(hf_config)
    log_kernel_backend(path.name, device, dtype, backend)
    return build_from_snapshot(
        lambda: model_class(cfg, backend=backend), path, kind="chat", dtype=dtype, device=device
    )


def _model_classes(hf_config: dict) -> tuple[type, type]:
    """(model, config) classes by the checkpoint's architecture; Llama-family is the default."""
    arch = (hf_config.get("architectures") or [""])[0]
    if arch in GEMMA3_ARCHITECTURES or hf_config.get("model_type") in GEMMA3_MODEL_TYPES:
        return Gemma3ForCausalLM, Gemma3Config
    return LlamaForCausalLM, LlamaConfig


def log_kernel_backend(name: str, device: torch.device, dtype: torch.dtype, backend: str | None) -> None:
    """Says once per model which kernels it runs; a warning when that is the slow torch path only
    because a faster backend is missing from this install (say, _C was not built)."""
    text = describe(device.type, backend)
    fastest = preferred_backends(device.type)[0]
    degraded = backend is None and not text.startswith(fastest)
    level = logging.WARNING if degraded else logging.INFO
    logger.log(level, "%s on %s in %s runs kernel backend %s", name, device, str(dtype)[6:], text)


def _init_random(model: torch.nn.Module, seed: int) -> None:
    """Small random weights: the shapes and speed of the real model without its checkpoint."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):  # every norm (layernorms, final norm, q/k norms) starts at 1
            param.data.fill_(1.0)
            continue
        values = torch.randn(param.shape, generator=generator) * 0.02
        param.data.copy_(values.to(param.dtype))
