"""Between a torch module and a snapshot, for any model: what to store, and how to load it back.

Saving takes the module's state_dict (its runtime layout: fused, cast) plus its non-persistent
buffers (rotary tables), so a load recomputes nothing. Loading fills a skeleton built on the
`meta` device: its parameters and buffers become the snapshot's tensors (load_state_dict with
assign=True), with no allocation and no copy on the CPU mmap path. The loader never imports a
model class; the caller builds the skeleton.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from swiftserve.loader.snapshot_errors import SnapshotMismatchError
from swiftserve.loader.snapshot_reader import Snapshot, load_snapshot

logger = logging.getLogger(__name__)


@contextmanager
def meta_skeleton() -> Iterator[None]:
    """Modules built inside get their parameters on `meta`, and torch.nn.init is skipped.

    Every value comes from the snapshot, and initializing on meta is not free: the first
    initializer (nn.Embedding's normal_) runs a Python reference that imports torch._dynamo,
    ~1.5 s once per process, on the cold-start path. The mode is thread-local, like torch.device.
    """
    with torch.device("meta"), _SkipInit():
        yield


class _SkipInit(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def snapshot_tensors(module: nn.Module) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
    """Every tensor to store, in load order, and which of them are non-persistent buffers."""
    tensors = dict(module.state_dict())
    buffers = {name: b for name, b in module.named_buffers(remove_duplicate=False) if name not in tensors}
    return {**tensors, **buffers}, frozenset(buffers)


def expected_names(module: nn.Module) -> list[str]:
    tensors = list(module.state_dict())
    return tensors + [name for name, _ in module.named_buffers(remove_duplicate=False) if name not in tensors]


def load_into_skeleton(
    skeleton: nn.Module,
    path: str | Path,
    *,
    kind: str,
    dtype: torch.dtype,
    device: torch.device,
    verify: bool | None = None,
    method: str = "auto",
) -> Snapshot:
    """Fills skeleton (built on meta) from the snapshot at path; raises a SnapshotError when the
    file is bad or holds another model. On failure the skeleton is half-filled: drop it."""
    names = expected_names(skeleton)
    snapshot = load_snapshot(path, required=names, device=device, verify=verify, method=method)
    try:
        if snapshot.header.meta.kind != kind:
            raise SnapshotMismatchError(path, f"a {snapshot.header.meta.kind} model, expected a {kind} model")
        _check_fits(skeleton, snapshot, set(names))
        _assign(skeleton, snapshot.tensors)
    except BaseException:
        # The error's traceback keeps this frame's locals: drop the views, or they would keep
        # the file mapped for as long as someone holds the error.
        snapshot.tensors.clear()
        raise
    stored = snapshot.header.meta.dtype
    if getattr(torch, stored) is not dtype:
        logger.warning("%s holds %s weights; casting to %s costs a copy", path, stored, str(dtype)[6:])
        skeleton.to(dtype)
    return snapshot


def _check_fits(skeleton: nn.Module, snapshot: Snapshot, names: set[str]) -> None:
    extra = sorted(snapshot.tensors.keys() - names)
    if extra:
        raise SnapshotMismatchError(snapshot.path, "the model has no place for this tensor", extra[0])
    params = skeleton.named_parameters(remove_duplicate=False)
    for name, want in [*params, *skeleton.named_buffers(remove_duplicate=False)]:
        got = snapshot.tensors[name].shape
        if got != want.shape:
            raise SnapshotMismatchError(
                snapshot.path, f"shape {tuple(got)}, the model expects {tuple(want.shape)}", name
            )


def _assign(skeleton: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    tied = _tied_groups(skeleton)
    state_names = list(skeleton.state_dict())
    skeleton.load_state_dict({name: tensors[name] for name in state_names}, strict=True, assign=True)
    for name, _ in list(skeleton.named_buffers(remove_duplicate=False)):
        if name not in state_names:  # non-persistent: load_state_dict skips them
            owner, _, attr = name.rpartition(".")
            setattr(skeleton.get_submodule(owner), attr, tensors[name])
    # assign=True makes one Parameter per name: tie shared ones again (lm_head = embed_tokens).
    for names in tied:
        shared = skeleton.get_parameter(names[0])
        for name in names[1:]:
            owner, _, attr = name.rpartition(".")
            setattr(skeleton.get_submodule(owner), attr, shared)


def _tied_groups(module: nn.Module) -> list[list[str]]:
    by_id: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]
