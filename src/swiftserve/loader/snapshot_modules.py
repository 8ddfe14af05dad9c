"""Between a torch module and a snapshot, for any model: what to store, and how to load it back.

Saving takes the module's state_dict (its runtime layout: fused, cast) plus its non-persistent
buffers (rotary tables), so a load recomputes nothing. Loading fills a skeleton built on the
`meta` device: its parameters and buffers become the snapshot's tensors, with no allocation and
no copy on the CPU mmap path. The loader never imports a model class; the caller passes a
function that builds the skeleton (build_from_snapshot), which runs while the file loads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from swiftserve.loader.model_kind import kind_model
from swiftserve.loader.snapshot_errors import SnapshotMismatchError, SnapshotMissingTensorError
from swiftserve.loader.snapshot_reader import Snapshot, load_snapshot, resolve_method

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


@dataclass(frozen=True)
class TensorSlot:
    """Where one named tensor of a module lives: owner._parameters[attr] or owner._buffers[attr]."""

    name: str
    owner: nn.Module
    attr: str
    current: torch.Tensor
    is_parameter: bool


def tensor_slots(module: nn.Module) -> list[TensorSlot]:
    """Every parameter and buffer by its state_dict name, tied names included (one walk, where
    state_dict, named_parameters and named_buffers would each walk the tree again)."""
    slots = []
    for prefix, owner in module.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        for attr, tensor in owner._parameters.items():
            if tensor is not None:
                slots.append(TensorSlot(dot + attr, owner, attr, tensor, True))
        for attr, tensor in owner._buffers.items():
            if tensor is not None:
                slots.append(TensorSlot(dot + attr, owner, attr, tensor, False))
    return slots


def build_from_snapshot(
    build: Callable[[], nn.Module],
    path: str | Path,
    *,
    kind: str,
    dtype: torch.dtype,
    device: torch.device,
    verify: bool | None = None,
    method: str = "auto",
) -> nn.Module:
    """build() (a skeleton on meta) filled from the snapshot at path, in eval mode.

    A file that is read (cold, or for a device) is read by a worker thread while build() runs
    here: the reads release the GIL, so the skeleton costs nothing extra. A mapped file (in the
    page cache) is mapped first, then the skeleton built: both are Python holding the GIL, and
    interleaved they take longer than in turn (SmolLM2 here: 30 ms against 22 ms, the thread
    switch interval being 5 ms). Raises a SnapshotError when the file is bad or holds another
    model; nothing of it is kept then."""
    method = resolve_method(path, device, method)
    load = functools.partial(load_snapshot, path, device=device, verify=verify, method=method)
    if method == "mmap":
        snapshot = load()
        try:
            with meta_skeleton():
                skeleton = build()
        except BaseException:
            snapshot.tensors.clear()
            raise
    else:
        skeleton, snapshot = _build_while_loading(build, load)
    _fill(skeleton, snapshot, kind, dtype)
    return skeleton.eval()


def _build_while_loading(
    build: Callable[[], nn.Module], load: Callable[[], Snapshot]
) -> tuple[nn.Module, Snapshot]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-load") as pool:
        pending = pool.submit(load)
        try:
            with meta_skeleton():
                skeleton = build()
        except BaseException:
            _discard(pending)
            raise
        return skeleton, pending.result()


def _discard(pending: Future) -> None:
    """Waits for a load whose model failed to build and lets go of its tensors (the error's
    traceback would otherwise keep the file mapped); its own error, if any, is moot."""
    with contextlib.suppress(BaseException):
        pending.result().tensors.clear()


def _fill(skeleton: nn.Module, snapshot: Snapshot, kind: str, dtype: torch.dtype) -> None:
    try:
        if snapshot.header.meta.kind != kind:
            problem = f"{kind_model(snapshot.header.meta.kind)}, expected {kind_model(kind)}"
            raise SnapshotMismatchError(snapshot.path, problem)
        slots = tensor_slots(skeleton)
        _check_fits(slots, snapshot)
        _assign(slots, snapshot.tensors)
    except BaseException:
        # The error's traceback keeps this frame's locals: drop the views, or they would keep
        # the file mapped for as long as someone holds the error.
        snapshot.tensors.clear()
        raise
    stored = snapshot.header.meta.dtype
    if getattr(torch, stored) is not dtype:
        cast = str(dtype).removeprefix("torch.")
        logger.warning("%s holds %s weights; casting to %s costs a copy", snapshot.path, stored, cast)
        skeleton.to(dtype)


def _check_fits(slots: list[TensorSlot], snapshot: Snapshot) -> None:
    names = {slot.name for slot in slots}
    missing = sorted(names - snapshot.tensors.keys())
    if missing:
        more = f" (and {len(missing) - 1} more: {missing[1:5]})" if len(missing) > 1 else ""
        raise SnapshotMissingTensorError(snapshot.path, f"missing from the snapshot{more}", missing[0])
    extra = sorted(snapshot.tensors.keys() - names)
    if extra:
        raise SnapshotMismatchError(snapshot.path, "the model has no place for this tensor", extra[0])
    for slot in slots:
        got = snapshot.tensors[slot.name].shape
        if got != slot.current.shape:
            raise SnapshotMismatchError(
                snapshot.path, f"shape {tuple(got)}, the model expects {tuple(slot.current.shape)}", slot.name
            )


def _assign(slots: list[TensorSlot], tensors: dict[str, torch.Tensor]) -> None:
    """Each slot takes the snapshot's tensor; parameters tied in the skeleton (one object under
    several names, lm_head = embed_tokens) stay one object. Straight into the module's dicts:
    nn.Module.__setattr__'s checks cost more than the whole assignment otherwise."""
    made: dict[int, nn.Parameter] = {}
    for slot in slots:
        tensor = tensors[slot.name]
        if not slot.is_parameter:
            slot.owner._buffers[slot.attr] = tensor
            continue
        key = id(slot.current)
        if key not in made:
            made[key] = nn.Parameter(tensor, requires_grad=slot.current.requires_grad)
        slot.owner._parameters[slot.attr] = made[key]
