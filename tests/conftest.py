"""Shared fixtures: the real default models (prepared once per machine by `make models`), the
portable flavour of the C++ kernels, a device executor per module and a reader of this process's RSS.

The tests never reach for the network: model hubs are unreachable on many machines, and a model
that is not prepared fails its test at once, naming the command that prepares it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before anything imports huggingface_hub or transformers: they read these once, at import.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SWIFTSERVE_OFFLINE": "1"}
os.environ.update(OFFLINE)

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # `python -m pytest` from the root puts the root first on sys.path, and its kernels/ then
    # shadows the installed `kernels` package that transformers imports: dozens of unrelated
    # failures. Say so once instead.
    if any(Path(entry or os.getcwd()).resolve() == ROOT for entry in sys.path):
        raise pytest.UsageError(
            f"the repository root ({ROOT}) is on sys.path, where its kernels/, router/ and "
            "scheduler/ folders shadow installed packages of those names. Run `make test`, "
            "`python -P -m pytest` or the `pytest` command instead of `python -m pytest`."
        )


@pytest.fixture(scope="session")
def smollm_dir():
    from swiftserve.loader import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_dir():
    from swiftserve.loader import resolve_model

    return resolve_model("all-minilm-l6-v2")


@pytest.fixture
def generic_kernels(monkeypatch):
    """Runs the cpp backend on the portable (Generic) instantiation of the kernels instead of the
    build's native flavour (AVX-512 or AVX2; see csrc/cpu/vec.h)."""
    from swiftserve.kernels import cpp_native

    monkeypatch.setattr(cpp_native, "_C", cpp_native.GenericC(cpp_native._C))  # every cpp wrapper calls it


@pytest.fixture(params=["native", "generic"])
def flavour(request):
    """Runs a cpp kernel test on both vector flavours of this build: the native one (what
    generic=False picks) and the portable Generic one."""
    if request.param == "generic":
        request.getfixturevalue("generic_kernels")
    return request.param


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def hf_greedy():
    """transformers' greedy continuation of each prompt, exactly num_new tokens (eos masked until
    then, as min_tokens does here): (model, prompt_ids, num_new) -> token ids per prompt."""

    def generate(model, prompt_ids: list[list[int]], num_new: int) -> list[list[int]]:
        outs = []
        for ids in prompt_ids:
            with torch.no_grad():
                gen = model.generate(
                    torch.tensor([ids]),
                    do_sample=False,
                    max_new_tokens=num_new,
                    min_new_tokens=num_new,
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                )
            outs.append(gen[0, len(ids) :].tolist())
        return outs

    return generate


@pytest.fixture(scope="session")
def gguf_readings():
    """transformers' readings of the source GGUF files, each read once per session (tens of
    seconds each; the converter's, the greedy and the server tests compare against the same ones)."""
    from tests.gguf_reference import Readings

    return Readings()


@pytest.fixture(scope="module")
def executor(request):
    """One started device executor per test module (the engines of its served models share it)."""
    from swiftserve.engine.device_executor import DeviceExecutor

    ex = DeviceExecutor(request.module.__name__.rpartition(".")[2])
    ex.start()
    yield ex
    ex.stop()


@pytest.fixture
def rss():
    """A function that reads this process's resident memory in bytes (Linux /proc)."""

    def read() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    return read
