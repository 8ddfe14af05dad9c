"""What a new user imports from `swiftserve` (issue #24): every engine the README names is there
and works as the README shows it."""

from __future__ import annotations

import subprocess
import sys

import swiftserve


def test_embedding_engine_is_importable_from_the_package(minilm_dir) -> None:
    assert "EmbeddingEngine" in swiftserve.__all__
    from swiftserve import EmbeddingEngine

    vectors = EmbeddingEngine(str(minilm_dir)).embed_sync(["a text", "another"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 384


def test_every_public_name_imports_in_a_fresh_process() -> None:
    names = ", ".join(swiftserve.__all__)
    subprocess.run([sys.executable, "-c", f"from swiftserve import {names}"], check=True)
