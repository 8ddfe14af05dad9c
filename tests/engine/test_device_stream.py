"""Per-engine streams: a pass-through on the CPU, the engine's own stream on CUDA."""

import pytest
import torch

from swiftserve.engine.device_stream import EngineStream


def test_on_the_cpu_a_step_runs_as_is():
    stream = EngineStream(torch.device("cpu"))
    assert stream.stream is None
    assert stream.run(lambda: torch.ones(3).sum().item()) == 3.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_step_runs_on_the_engines_own_stream():
    device = torch.device("cuda")
    a, b = EngineStream(device), EngineStream(device)
    assert a.stream != b.stream
    seen = a.run(lambda: torch.cuda.current_stream(device))
    assert seen == a.stream and torch.cuda.current_stream(device) != a.stream
    x = torch.arange(4.0, device=device)
    out = a.run(lambda: x * 2)
    a.stream.synchronize()
    assert out.tolist() == [0.0, 2.0, 4.0, 6.0]
