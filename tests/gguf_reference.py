"""transformers' own reading of a GGUF file: the independent reference that the folders our
converter writes are checked against. transformers maps the tensors, undoes llama.cpp's changes,
builds the config and the tokenizer by its own code; nothing of swiftserve's converter is used.

Reading a GGUF is slow (transformers parses the whole file once for the config, again for the
weights and again for the tokenizer: tens of seconds for Gemma 3's 262k-token vocabulary), so
one session reads each file once: the `gguf_readings` fixture (tests/conftest.py) holds a
Readings, and the modules that compare against the same file share it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

# Config keys that say where a config was read from or how it was loaded, not what the model is.
_PROVENANCE = ("_name_or_path", "_model_name_or_path", "dtype", "quantization_config", "transformers_version")
# Tokenizer ids that transformers copies from the GGUF metadata into its config. The converter
# leaves them to the tokenizer files, but one that it does write must agree.
_TOKENIZER_IDS = ("pad_token_id", "unk_token_id")


def load_model(gguf_path: Path) -> transformers.PreTrainedModel:
    """transformers' model for the GGUF file, dequantized by transformers, float32 weights rounded
    to bfloat16 values: the converter stores bfloat16 by design, and rounding the reference the
    same way lets greedy tokens be compared exactly (a long continuation can turn bfloat16 noise
    into a different near-tie). Rounding commutes with everything compared: converted weights
    must equal these bit for bit."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.to(torch.bfloat16))
    return model.eval()


def load_tokenizer(gguf_path: Path) -> transformers.PreTrainedTokenizerBase:
    """transformers' tokenizer built from the GGUF metadata."""
    return transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


class Readings:
    """load_model and load_tokenizer, each file read once. Callers that set a model's
    generation_config set it before each use: the model is shared."""

    def __init__(self) -> None:
        self._models: dict[Path, transformers.PreTrainedModel] = {}
        self._tokenizers: dict[Path, transformers.PreTrainedTokenizerBase] = {}

    def model(self, gguf_path: Path) -> transformers.PreTrainedModel:
        if gguf_path not in self._models:
            self._models[gguf_path] = load_model(gguf_path)
        return self._models[gguf_path]

    def tokenizer(self, gguf_path: Path) -> transformers.PreTrainedTokenizerBase:
        if gguf_path not in self._tokenizers:
            self._tokenizers[gguf_path] = load_tokenizer(gguf_path)
        return self._tokenizers[gguf_path]


def config_differences(
    folder: Path, model: transformers.PreTrainedModel, extra_eos_ids: tuple[int, ...] = ()
) -> dict[str, tuple]:
    """key -> (converted, reference) for every difference between transformers' reading of the
    converted folder's config.json and its reading of the GGUF, but for provenance and what the
    converter adds on purpose: the architecture (transformers' GGUF reading leaves it None) and
    extra_eos_ids after the GGUF's eos (tokens that end a chat turn). Floats compare as float32,
    the precision GGUF stores them in."""
    ours = transformers.AutoConfig.from_pretrained(folder).to_dict()
    theirs = model.config.to_dict()
    for key in _PROVENANCE:
        ours.pop(key, None)
        theirs.pop(key, None)
    if theirs.get("architectures") is None:
        theirs["architectures"] = [type(model).__name__]
    if extra_eos_ids:
        theirs["eos_token_id"] = [theirs["eos_token_id"], *extra_eos_ids]
    for key in _TOKENIZER_IDS:
        if ours.get(key) is None:
            ours.pop(key, None)
            theirs.pop(key, None)
    keys = sorted(set(ours) | set(theirs))
    return {
        key: (ours.get(key, "<missing>"), theirs.get(key, "<missing>"))
        for key in keys
        if _as_float32(ours.get(key, "<missing>")) != _as_float32(theirs.get(key, "<missing>"))
    }


def _as_float32(value):
    if isinstance(value, float):
        return np.float32(value)
    if isinstance(value, dict):
        return {k: _as_float32(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_float32(v) for v in value]
    return value
