"""Which snapshot files have had every checksum verified: a sidecar marker next to each file.

A snapshot is opened read-only, so the record cannot live in its header. The marker
`<file>.verified` holds the identity of the file it vouches for (device, inode, size,
modification and change times, from the open file). Replacing or editing the snapshot changes
that identity (a rename brings a new inode, any write a new change time), so a stale marker is
simply not believed and the next load verifies again. Where the directory is not writable there
is no marker, and every load verifies: slower, never wrong.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import msgspec

logger = logging.getLogger(__name__)

MARKER_SUFFIX = ".verified"


def file_identity(fd: int) -> list[int]:
    stat = os.fstat(fd)
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def is_verified(path: Path, identity: list[int]) -> bool:
    try:
        return msgspec.json.decode(marker_path(path).read_bytes()) == identity
    except (OSError, msgspec.DecodeError):
        return False


def record_verified(path: Path, identity: list[int]) -> None:
    """Writes the marker atomically (a reader never sees half of one); failures only log."""
    marker = marker_path(path)
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{marker.name}.", dir=marker.parent)
    except OSError as error:
        logger.debug("%s: cannot record verified checksums (%s); every load verifies", path, error)
        return
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(msgspec.json.encode(identity))
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, marker)
    except OSError as error:
        Path(temp_name).unlink(missing_ok=True)
        logger.debug("%s: cannot record verified checksums (%s)", path, error)
