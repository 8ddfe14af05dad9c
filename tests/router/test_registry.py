"""Model specs and kind detection."""

from __future__ import annotations

import json

import pytest
from swiftserve.router.registry import ModelSpec, detect_kind

from swiftserve.loader.model_kind import kind_from_config


def test_aliases_have_their_kind():
    assert detect_kind("smollm2-135m-instruct") == "chat"
    assert detect_kind("all-minilm-l6-v2") == "embedding"


def test_spec_with_served_name():
    spec = ModelSpec.parse("small=smollm2-135m-instruct")
    assert (spec.served_name, spec.source, spec.kind) == ("small", "smollm2-135m-instruct", "chat")
    assert ModelSpec.parse("all-minilm-l6-v2").served_name == "all-minilm-l6-v2"


def test_folders_by_config(tmp_path):
    bert = tmp_path / "my-bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    llama = tmp_path / "my-llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert ModelSpec.parse(str(bert)) == ModelSpec("my-bert", str(bert), "embedding")
    assert ModelSpec.parse(f"x={llama}") == ModelSpec("x", str(llama), "chat")
    assert ModelSpec.parse(str(tmp_path / "m.gguf")).served_name == "m"
    assert ModelSpec.parse(str(tmp_path / "m.gguf")).kind == "chat"


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ({"architectures": ["XLMRobertaModel"]}, "embedding"),
        ({"architectures": ["NomicBertModel"]}, "embedding"),
        ({"model_type": "bert"}, "embedding"),
        ({"architectures": ["Qwen2ForCausalLM"]}, "chat"),
        ({}, "chat"),
    ],
)
def test_kind_from_config(config, kind):
    assert kind_from_config(config) == kind


def test_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        ModelSpec.parse("no-such-alias")
    with pytest.raises(ValueError, match="config.json"):
        ModelSpec.parse(str(tmp_path))
    with pytest.raises(ValueError, match="empty"):
        ModelSpec.parse("  ")
    with pytest.raises(ValueError, match="names no model"):
        ModelSpec.parse("name=")
