"""Model loading: built-in aliases, GGUF conversion, safetensors weights, tokenizer, chat template,
snapshots (one file per model, tensors in runtime layout: snapshot_format.py).

folder = resolve_model("smollm2-135m-instruct")   # fetched and converted once, then cached
config = load_config(folder)
for name, tensor in iter_weights(folder): ...
info = load_tokenizer(folder)
prompt = apply_chat_template(info, [{"role": "user", "content": "Hi"}])
ids = info.encode(prompt, add_special_tokens=False)
snapshot = load_snapshot("model.swsnap")        # snapshot.tensors: views of the mapped file
"""

from swiftserve.loader.aliases import ModelAlias, ModelFetchError, ModelNotPreparedError, known_aliases
from swiftserve.loader.chat_template import apply_chat_template
from swiftserve.loader.resolve import default_cache_dir, resolve_model, source_gguf
from swiftserve.loader.snapshot_errors import SnapshotError
from swiftserve.loader.snapshot_reader import is_snapshot, load_snapshot, read_header, read_index
from swiftserve.loader.snapshot_writer import write_snapshot
from swiftserve.loader.tokenizer import TokenizerInfo, load_tokenizer
from swiftserve.loader.weights import iter_weights, load_config

__all__ = [
    "ModelAlias",
    "ModelFetchError",
    "ModelNotPreparedError",
    "SnapshotError",
    "TokenizerInfo",
    "apply_chat_template",
    "default_cache_dir",
    "is_snapshot",
    "iter_weights",
    "known_aliases",
    "load_config",
    "load_snapshot",
    "load_tokenizer",
    "read_header",
    "read_index",
    "resolve_model",
    "source_gguf",
    "write_snapshot",
]
