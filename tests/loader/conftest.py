"""Loader fixtures: the real SmolLM2 GGUF and transformers' tokenizer built from it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm_gguf(smollm_dir) -> Path:
    """The original SmolLM2 Q4_1 GGUF the smollm_dir folder was converted from."""
    from swiftserve.loader import source_gguf

    return source_gguf("smollm2-135m-instruct", progress=False)


@pytest.fixture(scope="session")
def hf_gguf_tokenizer(smollm_gguf):
    """transformers' own tokenizer built from the GGUF metadata (the reference)."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name)
