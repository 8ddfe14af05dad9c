"""The one rule for dtype "auto" (loader/dtypes.py) and the model source that applies it."""

from __future__ import annotations

import pytest
import torch

from swiftserve.loader.dtypes import serving_dtype, torch_dtype
from swiftserve.loader.model_source import ModelSource, WrongModelKindError


@pytest.mark.parametrize(
    ("kind", "requested", "stored", "served"),
    [
        ("chat", "auto", None, "bfloat16"),
        ("embedding", "auto", None, "float32"),
        ("chat", "auto", "float32", "float32"),  # a snapshot keeps what it stores
        ("embedding", "auto", "bfloat16", "bfloat16"),
        ("chat", "float32", "bfloat16", "float32"),  # asked for: cast
        ("embedding", "bfloat16", None, "bfloat16"),
    ],
)
def test_auto_is_the_stored_dtype_else_the_kinds_default(kind, requested, stored, served):
    assert serving_dtype(kind, requested, stored) == served


def test_unknown_dtypes_and_float16_on_cpu_are_refused():
    with pytest.raises(ValueError, match="dtype must be one of"):
        serving_dtype("chat", "int3")
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        torch_dtype("float16", torch.device("cpu"))
    assert torch_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def test_a_source_applies_the_rule_and_checks_its_kind(tmp_path):
    folder = ModelSource("m", tmp_path, "embedding", {"hidden_size": 8})
    assert folder.serving_dtype("auto") == "float32" and not folder.is_snapshot
    assert folder.expect("embedding") is folder
    with pytest.raises(WrongModelKindError, match="'m' is an embedding model, not a chat model"):
        folder.expect("chat")
