"""The writer is atomic: a failed write leaves no file, concurrent writers never mix their bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from swiftserve.loader import snapshot_writer
from swiftserve.loader.snapshot_reader import load_snapshot
from swiftserve.loader.snapshot_writer import write_snapshot

from .snapshot_factory import META, sample_tensors, write_sample

HERE = Path(__file__).parent


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_exception_mid_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    before = path.read_bytes()

    def fail_part_way(file, header, stored):
        file.write(b"\0" * 10_000)  # some bytes are out, then the write fails
        raise RuntimeError("injected failure")

    monkeypatch.setattr(snapshot_writer, "_write_contents", fail_part_way)
    with pytest.raises(RuntimeError, match="injected"):
        write_sample(path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_disk_full_removes_the_partial_file(tmp_path):
    # A file size limit makes write() fail with EFBIG part way, as a full disk fails it with ENOSPC.
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(HERE)!r})
        from snapshot_factory import write_sample
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            write_sample(__import__("pathlib").Path({str(tmp_path / "m.swsnap")!r}))
        except OSError as error:
            print("failed:", error.errno)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("failed:")
    assert list(tmp_path.iterdir()) == []


def _variant(value: float) -> dict[str, torch.Tensor]:
    tensors = sample_tensors()
    return {name: torch.full_like(t, value) if t.is_floating_point() else t for name, t in tensors.items()}


def test_concurrent_threads_leave_one_whole_file(tmp_path):
    path = tmp_path / "m.swsnap"
    values = [1.0, 2.0, 3.0, 4.0]
    barrier = threading.Barrier(len(values))

    def write(value: float) -> None:
        barrier.wait()
        for _ in range(3):
            write_snapshot(path, _variant(value), META)

    threads = [threading.Thread(target=write, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_one_of(path, values)


def test_concurrent_processes_leave_one_whole_file(tmp_path):
    path = tmp_path / "m.swsnap"
    script = textwrap.dedent(
        f"""
        import sys, pathlib
        sys.path.insert(0, {str(HERE)!r})
        import torch
        from snapshot_factory import META, sample_tensors
        from swiftserve.loader.snapshot_writer import write_snapshot
        value = float(sys.argv[1])
        tensors = {{n: torch.full_like(t, value) if t.is_floating_point() else t
                   for n, t in sample_tensors().items()}}
        for _ in range(5):
            write_snapshot(pathlib.Path({str(path)!r}), tensors, META)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(v)]) for v in (5.0, 6.0)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    _check_one_of(path, [5.0, 6.0])


def _check_one_of(path: Path, values: list[float]) -> None:
    snapshot = load_snapshot(path, verify=True)  # every checksum holds: no mixed bytes
    value = snapshot.tensors["layer.proj"][0, 0].item()
    assert value in values
    for name, want in _variant(value).items():
        assert torch.equal(snapshot.tensors[name], want), name
    assert _leftovers(path.parent) == []


def test_a_read_during_a_rename_gets_the_file_it_opened(tmp_path, monkeypatch):
    from swiftserve.loader import snapshot_memory

    path, newer = tmp_path / "m.swsnap", tmp_path / "newer.swsnap"
    write_snapshot(path, _variant(1.0), META)
    write_snapshot(newer, _variant(2.0), META)
    real = snapshot_memory.read_into

    def rename_first(*args, **kwargs):
        os.replace(newer, path)  # a writer finishes between the header check and the reads
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshot_memory, "read_into", rename_first)
    snapshot = load_snapshot(path, method="read", verify=True)
    assert torch.equal(snapshot.tensors["layer.proj"], _variant(1.0)["layer.proj"])
