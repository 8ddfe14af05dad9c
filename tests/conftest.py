"""Shared fixtures: the real default models, fetched and converted once per machine."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def smollm_dir():
    from swiftserve.loader import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_dir():
    from swiftserve.loader import resolve_model

    return resolve_model("all-minilm-l6-v2")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
