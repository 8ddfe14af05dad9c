"""The dispatcher: the fastest backend that accepts the inputs runs; a skipped backend is logged
once with its reason; a named backend that cannot run the inputs is the caller's error."""

from __future__ import annotations

import logging

import pytest
import torch
from swiftserve.kernels import cpp_ops, dispatch, reference
from swiftserve.kernels.errors import UnsupportedInputError

from swiftserve import kernels

from .cases import make_decode_case

pytestmark = pytest.mark.skipif(
    not cpp_ops.is_available(), reason="swiftserve._C is not built (pip install -e .)"
)

LOGGER = "swiftserve.kernels.dispatch"


def _decode(case, **kwargs):
    c = case.cache
    return kernels.paged_decode_attention(
        case.q, c.k_cache, c.v_cache, c.block_tables, c.context_lens, 0.125, **kwargs
    )


@pytest.fixture
def fresh_log():
    dispatch._log_skip.cache_clear()
    yield
    dispatch._log_skip.cache_clear()


@pytest.mark.usefixtures("fresh_log")
def test_unsupported_input_falls_back_with_one_log_line(caplog):
    case = make_decode_case([20, 3], 4, 2, 64, dtype=torch.float16, seed=8)
    expected = _decode(case, backend="torch")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):  # every layer of every step hits the same reason: said once
            torch.testing.assert_close(_decode(case), expected, rtol=0, atol=0)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1
    assert "paged_decode_attention" in lines[0] and "'cpp' skipped" in lines[0]
    assert "float16" in lines[0] and "running 'torch' instead" in lines[0]


@pytest.mark.usefixtures("fresh_log")
def test_supported_input_runs_cpp_silently(caplog, monkeypatch):
    calls = []
    real = cpp_ops.paged_decode_attention

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    dispatch.resolve.cache_clear()
    monkeypatch.setattr(cpp_ops, "paged_decode_attention", spy)
    try:
        case = make_decode_case([20], 4, 2, 64, dtype=torch.bfloat16, seed=8)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            _decode(case)
    finally:
        dispatch.resolve.cache_clear()  # drop the spy from the cache
    assert calls == [torch.bfloat16]
    assert not [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize("head_dim", [48, 72])
def test_named_backend_refusing_is_an_error(head_dim):
    case = make_decode_case([5], 4, 2, head_dim, dtype=torch.float32, seed=1)
    with pytest.raises(UnsupportedInputError, match=f"head_dim {head_dim}"):
        _decode(case, backend="cpp")
    # unnamed, the same inputs run (on the reference) and agree with it
    torch.testing.assert_close(_decode(case), _decode(case, backend="torch"), rtol=0, atol=0)


def test_invalid_input_is_not_a_fallback():
    """A ValueError (bad shapes) is the caller's bug: no backend tries to run it."""
    case = make_decode_case([5], 4, 2, 64, seed=1)
    c = case.cache
    with pytest.raises(ValueError, match="KV heads") as info:
        kernels.paged_decode_attention(
            case.q[:, :3], c.k_cache, c.v_cache, c.block_tables, c.context_lens, 0.1
        )
    assert not isinstance(info.value, UnsupportedInputError)


def test_unknown_backend_is_named():
    case = make_decode_case([5], 4, 2, 64, seed=1)
    with pytest.raises(ValueError, match="unknown kernel backend 'cuda2'"):
        _decode(case, backend="cuda2")


def test_backend_statuses_say_what_runs():
    statuses = {s.name: s for s in dispatch.backend_statuses()}
    assert set(statuses) == {"torch", "triton", "cpp", "cuda", "flash_attn"}
    assert statuses["torch"].is_available and statuses["cpp"].is_available
    assert "native C++" in statuses["cpp"].detail
    assert dispatch.describe("cpu").startswith("cpp (native C++")
    assert reference.status().startswith("pure torch")
