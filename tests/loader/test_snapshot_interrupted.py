"""`swiftserve snapshot` stopped by a signal mid-write (issue #24): the ~300 MB temporary file it
was writing next to the target is removed, as it is when the write raises."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _wait_for_temporary(folder: Path, process: subprocess.Popen, timeout_s: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in folder.glob(".*.tmp") if p.stat().st_size > 0]
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.002)
    raise AssertionError("the snapshot's temporary file never appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_write_leaves_no_temporary_file(smollm_dir, tmp_path, sig) -> None:
    target = tmp_path / "smollm.swsnap"
    command = [sys.executable, "-m", "swiftserve.cli", "snapshot", str(smollm_dir), "-o", str(target)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_temporary(tmp_path, process)
        process.send_signal(sig)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], out
    assert process.returncode == 128 + sig, out  # the shell's code for a death by that signal
