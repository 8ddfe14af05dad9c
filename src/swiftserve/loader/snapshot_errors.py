"""Typed snapshot errors: callers branch on the class, never on the message.

Every error carries the file and, where one is to blame, the tensor. They are ValueErrors, so
the paths that report a bad model source (the CLI, the server's start-up) report these too.
"""

from __future__ import annotations

from pathlib import Path


def kind_model(kind: str) -> str:
    """'a chat model', 'an embedding model': a model kind in a sentence, with its article."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} model"


class SnapshotError(ValueError):
    def __init__(self, path: str | Path, problem: str, tensor: str | None = None) -> None:
        self.path = Path(path)
        self.tensor = tensor
        where = f"{self.path}" if tensor is None else f"{self.path}: tensor {tensor!r}"
        super().__init__(f"{where}: {problem}")


class SnapshotFormatError(SnapshotError):
    """Not a snapshot at all (wrong magic, shorter than the preamble)."""


class SnapshotVersionError(SnapshotError):
    """A snapshot of a format version this build cannot read."""


class SnapshotCorruptError(SnapshotError):
    """The header or index is invalid: undecodable, or it points outside the file."""


class SnapshotTruncatedError(SnapshotCorruptError):
    """The file is shorter than its header says: tensor names the first one cut off."""


class SnapshotChecksumError(SnapshotCorruptError):
    """A tensor's bytes do not hash to the index's checksum."""


class SnapshotMissingTensorError(SnapshotError):
    """The model needs a tensor the snapshot does not hold."""


class SnapshotMismatchError(SnapshotError):
    """A valid snapshot of something else: another kind of model, or a tensor of another shape."""


class SnapshotStaleError(SnapshotError):
    """An automatic snapshot made from an older state of its source (its SourceKey differs)."""
