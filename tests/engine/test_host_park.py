"""Parked weights (engine/host_park.py): kept in place on a CPU; on CUDA copied to pinned host
memory and back with the same values, tied weights still tied."""

from __future__ import annotations

import pytest
import torch

from swiftserve.engine.host_park import park_weights, restore_weights
from swiftserve.models.llama import LlamaForCausalLM
from swiftserve.models.llama_config import LlamaConfig

HF = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=True,
)


def _model(device: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(LlamaConfig.from_hf(HF), backend="torch").eval()


def test_on_a_cpu_the_weights_stay_where_they_are():
    model = _model("cpu")
    pointers = [p.data_ptr() for p in model.parameters()]
    parked = park_weights(model)
    assert not parked.is_on_host and restore_weights(parked) is model
    assert [p.data_ptr() for p in model.parameters()] == pointers  # nothing copied either way


@pytest.mark.gpu
def test_on_cuda_the_weights_go_to_pinned_host_memory_and_come_back():
    model = _model("cuda")
    want = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    parked = park_weights(model)
    assert parked.is_on_host
    assert all(p.device.type == "cpu" and p.is_pinned() for p in model.parameters())
    restore_weights(parked)
    torch.cuda.synchronize()
    assert all(t.device.type == "cuda" for t in [*model.parameters(), *model.buffers()])
    assert model.lm_head.weight is model.embed_tokens.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor.cpu(), want[name]), name
