"""The first `swiftserve launch` on an empty model cache (issue #24): preparing a model (fetching,
converting a GGUF) shows the progress bars `swiftserve pull` shows, instead of seconds of silence."""

from __future__ import annotations

import pytest

from ..loader.gguf_factory import tiny_hf_weights, write_tiny_gguf
from .live_server import Server

pytestmark = pytest.mark.slow


def test_converting_a_model_on_first_launch_shows_progress(tmp_path, monkeypatch) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf_weights())
    monkeypatch.setenv("SWIFTSERVE_CACHE", str(tmp_path / "empty-cache"))
    server = Server("--models", f"tiny={gguf}", "--no-snapshots")
    log = server.stop()
    bars = [line for line in log.replace("\r", "\n").splitlines() if line.startswith("converting tiny.gguf")]
    assert bars and "100%" in bars[-1], log
    assert log.index("converting tiny.gguf") < log.index("swiftserve ready:"), log
