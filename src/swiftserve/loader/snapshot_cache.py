"""Automatic snapshots in the model cache: where a source's snapshot lives and whether it is current.

One file per (source folder, dtype): `<cache>/snapshots/<folder>-<dtype>-<hash of its path>.swsnap`.
Its header's SourceKey records the folder, the dtype, the format version and a fingerprint of
the folder's files (names, sizes, modification times): a snapshot whose key differs is stale,
one that does not read is corrupt, and either is rebuilt from its source by the caller
(model_runner/model_loader.py). Writing is best effort: a cache that cannot be written only
costs the fast path (a warning), never the load.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from torch import nn

from swiftserve.loader.snapshot_errors import SnapshotError
from swiftserve.loader.snapshot_format import FORMAT_VERSION, SUFFIX, PoolingSpec, SnapshotMeta, SourceKey
from swiftserve.loader.snapshot_modules import snapshot_tensors
from swiftserve.loader.snapshot_reader import read_index
from swiftserve.loader.snapshot_writer import write_snapshot
from swiftserve.loader.tokenizer import load_tokenizer, read_tokenizer_files
from swiftserve.loader.weights import load_config

logger = logging.getLogger(__name__)

SNAPSHOTS_DIR = "snapshots"


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


def is_current(path: Path, key: SourceKey) -> bool:
    """Whether path holds a readable snapshot made from key's source; says why not in the log."""
    if not path.is_file():
        return False
    try:
        found = read_index(path).meta.source
    except SnapshotError as error:
        logger.warning("automatic snapshot unreadable, rebuilding it from its source: %s", error)
        return False
    if found != key:
        logger.info("%s is stale (its source changed), rebuilding it", path)
        return False
    return True


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
