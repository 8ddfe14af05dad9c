"""Model loading: built-in aliases, GGUF conversion, safetensors weights, tokenizer, chat template.

folder = resolve_model("smollm2-135m-instruct")   # fetched and converted once, then cached
config = load_config(folder)
for name, tensor in iter_weights(folder): ...
info = load_tokenizer(folder)
prompt = apply_chat_template(info, [{"role": "user", "content": "Hi"}])
ids = info.encode(prompt, add_special_tokens=False)
"""

from swiftserve.loader.aliases import ModelAlias, known_aliases
from swiftserve.loader.chat_template import apply_chat_template
from swiftserve.loader.resolve import default_cache_dir, resolve_model, source_gguf
from swiftserve.loader.tokenizer import TokenizerInfo, load_tokenizer
from swiftserve.loader.weights import iter_weights, load_config

__all__ = [
    "ModelAlias",
    "TokenizerInfo",
    "apply_chat_template",
    "default_cache_dir",
    "iter_weights",
    "known_aliases",
    "load_config",
    "load_tokenizer",
    "resolve_model",
    "source_gguf",
]
