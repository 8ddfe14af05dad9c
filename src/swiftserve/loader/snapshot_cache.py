"""Automatic snapshots in the model cache: where a source's snapshot lives, whether it is current,
and loading a model through it (load_through_cache, for chat and embedding models alike).

One file per (source folder, dtype): `<cache>/snapshots/<folder>-<dtype>-<hash of its path>.swsnap`.
Its header's SourceKey records the folder, the dtype, the format version and a fingerprint of
the folder's files (names, sizes, modification times): a snapshot whose key differs is stale,
one that does not read is corrupt, one of another kind or another config.json is a mismatch,
and each is rebuilt from its source. Writing is best effort: a cache that cannot be written
only costs the fast path (a warning), never the load.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from swiftserve.loader.snapshot_errors import SnapshotError, SnapshotMismatchError, SnapshotStaleError
from swiftserve.loader.snapshot_format import FORMAT_VERSION, SUFFIX, PoolingSpec, SnapshotMeta, SourceKey
from swiftserve.loader.snapshot_modules import snapshot_tensors
from swiftserve.loader.snapshot_reader import read_index
from swiftserve.loader.snapshot_writer import write_snapshot
from swiftserve.loader.tokenizer import load_tokenizer, read_tokenizer_files
from swiftserve.loader.weights import load_config

logger = logging.getLogger(__name__)

SNAPSHOTS_DIR = "snapshots"

Model = TypeVar("Model", bound=nn.Module)


def load_through_cache(
    cache_dir: Path,
    folder: Path,
    kind: str,
    dtype: torch.dtype,
    *,
    from_source: Callable[[], Model],
    from_snapshot: Callable[[Path], Model],
    pooling: Callable[[Model], PoolingSpec | None] = lambda _: None,
) -> Model:
    """folder's model from its automatic snapshot in cache_dir when that is current, else from
    the source (from_source), writing the snapshot for the next load.

    from_snapshot(path) loads a snapshot file; a SnapshotError from it (a checksum on the file's
    first use) rebuilds. pooling(model) is an encoder's head, recorded in the header as
    `swiftserve snapshot` records it (None for chat models).
    """
    dtype_name = str(dtype).removeprefix("torch.")
    key, path = source_key(folder, dtype_name), cache_path(cache_dir, folder, dtype_name)
    if is_current(path, key, kind, load_config(folder)):
        try:
            return from_snapshot(path)
        except SnapshotError as error:
            logger.warning("automatic snapshot unusable, rebuilding it from its source: %s", error)
    model = from_source()
    store(path, model, folder_meta(folder, kind, key, pooling(model)))
    return model


def source_key(folder: Path, dtype: str) -> SourceKey:
    """The key an automatic snapshot of folder in dtype must carry to be current."""
    folder = Path(folder).resolve()
    return SourceKey(
        spec=str(folder), dtype=dtype, format_version=FORMAT_VERSION, fingerprint=_fingerprint(folder)
    )


def cache_path(cache_dir: Path, folder: Path, dtype: str) -> Path:
    folder = Path(folder).resolve()
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return Path(cache_dir) / SNAPSHOTS_DIR / f"{folder.name}-{dtype}-{digest}{SUFFIX}"


def is_current(path: Path, key: SourceKey, kind: str, hf_config: dict) -> bool:
    """Whether path holds a readable kind snapshot made from key's source with this config.json;
    says why not in the log."""
    if not path.is_file():
        return False
    try:
        check_current(path, key, kind, hf_config)
    except SnapshotStaleError as error:  # the expected case after an update: no warning
        logger.info("automatic snapshot stale, rebuilding it: %s", error)
        return False
    except SnapshotError as error:
        logger.warning("automatic snapshot unusable, rebuilding it from its source: %s", error)
        return False
    return True


def check_current(path: Path, key: SourceKey, kind: str, hf_config: dict) -> None:
    """Raises SnapshotStaleError when path's SourceKey is not key, SnapshotMismatchError when it
    holds another kind of model or another config, another SnapshotError when it does not read."""
    meta = read_index(path).meta
    if meta.source != key:
        raise SnapshotStaleError(path, "made from another state of its source")
    # The key holds no kind, so both kinds of one folder would share its path: a snapshot of
    # the other kind must never load as this one. A config that differs under an equal key is
    # a file of another model (copied in, or config.json rewritten with its size and mtime
    # kept), which the key alone misses.
    if meta.kind != kind:
        raise SnapshotMismatchError(path, f"kind {meta.kind!r}, expected {kind!r}")
    if meta.hf_config != hf_config:
        raise SnapshotMismatchError(path, f"its config differs from {key.spec}'s config.json")


def folder_meta(folder: Path, kind: str, key: SourceKey, pooling: PoolingSpec | None = None) -> SnapshotMeta:
    """The header metadata of a snapshot of a Hugging Face folder (tokenizer, template, config)."""
    return SnapshotMeta(
        kind=kind,
        hf_config=load_config(folder),
        tokenizer=read_tokenizer_files(folder),
        dtype=key.dtype,
        source=key,
        chat_template=load_tokenizer(folder).chat_template,
        pooling=pooling,
    )


def store(path: Path, module: nn.Module, meta: SnapshotMeta) -> bool:
    """Writes module's snapshot to path; False (and a warning) when the cache cannot be written."""
    tensors, buffer_names = snapshot_tensors(module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_snapshot(path, tensors, meta, buffer_names)
    except OSError as error:
        logger.warning("cannot write the automatic snapshot %s (%s); serving from the source", path, error)
        return False
    return True


def _fingerprint(folder: Path) -> str:
    """Changes when any file directly in folder is added, removed, resized or rewritten."""
    parts = []
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            parts.append(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
