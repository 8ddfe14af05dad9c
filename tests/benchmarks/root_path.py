"""The repository root on sys.path while benchmark modules import, and off it again after."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def root_on_path() -> Iterator[None]:
    """benchmarks/ is importable only from the root; left on sys.path after (make_ggufs.py appends it
    again itself), its router/ and scheduler/ would be importable by their bare names for every
    later test (tests/test_environment.py checks that they are not)."""
    saved = list(sys.path)
    sys.path.append(str(ROOT))
    try:
        yield
    finally:
        sys.path[:] = saved
