"""Damaged snapshots: each a typed error naming the file (and the tensor), nothing left mapped."""

from __future__ import annotations

import gc
import os

import pytest

from swiftserve.loader.snapshot_errors import (
    SnapshotChecksumError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotFormatError,
    SnapshotMissingTensorError,
    SnapshotTruncatedError,
    SnapshotVersionError,
)
from swiftserve.loader.snapshot_format import PREAMBLE
from swiftserve.loader.snapshot_reader import load_snapshot, read_header
from swiftserve.loader.snapshot_verified import marker_path

from .snapshot_factory import drop_entry, is_mapped, replace_entry, rewrite_header, write_sample


@pytest.fixture
def snap(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    return path


def _fails(path, error_type, tensor=None, **kwargs) -> SnapshotError:
    with pytest.raises(error_type) as info:
        load_snapshot(path, **kwargs)
    error = info.value
    assert error.path == path and str(path) in str(error)
    assert error.tensor == tensor
    if tensor is not None:
        assert repr(tensor) in str(error)
    gc.collect()
    assert not is_mapped(path), "a failed load left the file mapped"
    return error


def _flip_byte(path, offset: int) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0x40]))


def test_truncated_file_names_the_first_tensor_cut(snap):
    header = read_header(snap)
    entry = header.entries()["layer.proj"]
    os.truncate(snap, entry.offset + 10)  # inside layer.proj
    _fails(snap, SnapshotTruncatedError, "layer.proj")
    os.truncate(snap, 100)  # inside the header
    _fails(snap, SnapshotTruncatedError)
    os.truncate(snap, 10)  # inside the preamble
    _fails(snap, SnapshotTruncatedError)


@pytest.mark.parametrize("method", ["mmap", "read"])
def test_flipped_byte_fails_its_checksum_when_verified(snap, method):
    entry = read_header(snap).entries()["layer.proj"]
    _flip_byte(snap, entry.offset + 5)
    _fails(snap, SnapshotChecksumError, "layer.proj", verify=True, method=method)
    load_snapshot(snap, verify=False, method=method)  # not asked to verify: loads (the bytes as they are)


def test_first_use_verifies_and_an_edit_voids_the_record(snap):
    assert not marker_path(snap).exists()
    load_snapshot(snap)  # first use: verified, then recorded
    assert marker_path(snap).exists()
    entry = read_header(snap).entries()["embed.weight"]
    _flip_byte(snap, entry.offset + 1000)  # the edit changes the file's identity
    _fails(snap, SnapshotChecksumError, "embed.weight")


def test_unwritable_directory_still_verifies(snap, monkeypatch):
    from swiftserve.loader import snapshot_verified

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(snapshot_verified.tempfile, "mkstemp", refuse)
    load_snapshot(snap)
    assert not marker_path(snap).exists()
    _flip_byte(snap, read_header(snap).entries()["layer.norm"].offset)
    _fails(snap, SnapshotChecksumError, "layer.norm")


def test_wrong_magic(snap):
    data = bytearray(snap.read_bytes())
    data[:4] = b"GGUF"
    snap.write_bytes(bytes(data))
    _fails(snap, SnapshotFormatError)


def test_wrong_version(snap):
    data = bytearray(snap.read_bytes())
    magic, _, reserved, length = PREAMBLE.unpack(data[: PREAMBLE.size])
    data[: PREAMBLE.size] = PREAMBLE.pack(magic, 99, reserved, length)
    snap.write_bytes(bytes(data))
    error = _fails(snap, SnapshotVersionError)
    assert "99" in str(error)


def test_header_pointing_past_the_end(snap):
    size = snap.stat().st_size
    rewrite_header(snap, lambda h: replace_entry(h, "layer.norm", offset=size + (1 << 20) - size % 4096))
    _fails(snap, SnapshotCorruptError, "layer.norm")


def test_header_length_past_the_end(snap):
    data = bytearray(snap.read_bytes())
    magic, version, reserved, _ = PREAMBLE.unpack(data[: PREAMBLE.size])
    data[: PREAMBLE.size] = PREAMBLE.pack(magic, version, reserved, len(data))
    snap.write_bytes(bytes(data))
    _fails(snap, SnapshotTruncatedError)


def test_garbage_header(snap):
    data = bytearray(snap.read_bytes())
    data[PREAMBLE.size : PREAMBLE.size + 16] = b"\xc1" * 16  # 0xc1 is never valid msgpack
    snap.write_bytes(bytes(data))
    _fails(snap, SnapshotCorruptError)


def test_missing_tensor(snap):
    _fails(snap, SnapshotMissingTensorError, "layer.gone", required=["layer.norm", "layer.gone"])
    rewrite_header(snap, lambda h: drop_entry(h, "layer.proj"))
    _fails(snap, SnapshotMissingTensorError, "layer.proj", required=["layer.norm", "layer.proj"])


def test_errors_are_value_errors_for_callers_that_report_bad_sources(snap):
    os.truncate(snap, 10)
    with pytest.raises(ValueError):
        read_header(snap)
