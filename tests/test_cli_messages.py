"""What the `swiftserve` command says about bad arguments (issue #24): each message names the
option once."""

from __future__ import annotations

import subprocess
import sys


def test_a_bad_idle_timeout_names_the_option_once() -> None:
    command = [sys.executable, "-m", "swiftserve.cli", "launch", "--idle-timeout", "5x"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("--idle-timeout:") == 1, done.stderr  # the usage names it too
    assert "argument --idle-timeout: expected a duration such as 60s or 5m, got '5x'" in done.stderr
