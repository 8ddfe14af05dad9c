"""Rebuild a Hugging Face `tokenizers.Tokenizer` from the vocabulary a GGUF file stores as metadata.

A GGUF has no tokenizer.json: llama.cpp keeps the tokens, their types, the BPE merges (or, for
sentencepiece, scores) and the name of its pre-tokenizer (`tokenizer.ggml.pre`). Supported:
byte-level BPE ("gpt2": Llama-3, Qwen, SmolLM) and sentencepiece BPE ("llama": Llama-2, Mistral).
"""

from __future__ import annotations

import logging
from functools import cache

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from swiftserve.loader.gguf_metadata import field_value

logger = logging.getLogger(__name__)

# llama.cpp token types (llama_token_type): a CONTROL token is a special token such as <|im_end|>;
# a USER_DEFINED one is an added token matched whole but printed, such as <think>.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4

# Pre-tokenizer splits by `tokenizer.ggml.pre`, each as the original tokenizer.json writes it.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_REGEX_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), _QWEN2_SPLIT),
}
# StarCoder-style vocabularies (SmolLM included) split every digit on its own, then apply GPT-2's regex.
_DIGIT_SPLIT_PRES = frozenset({"smollm", "starcoder", "refact"})
_GPT2_PRES = frozenset({"gpt2", "default", "gpt-2"})


def build_gguf_tokenizer(reader: GGUFReader) -> tuple[Tokenizer, dict]:
    """Returns the tokenizer and the tokenizer_config.json contents (special tokens, chat template)."""
    model_type = field_value(reader, "tokenizer.ggml.model")
    if model_type is None:
        raise ValueError("the GGUF file has no tokenizer (no tokenizer.ggml.model metadata)")
    if model_type not in ("gpt2", "llama"):
        raise ValueError(
            f"GGUF tokenizer type {model_type!r} is not supported; "
            "only byte-level BPE ('gpt2') and sentencepiece BPE ('llama') vocabularies are"
        )
    tokens: list[str] = field_value(reader, "tokenizer.ggml.tokens")
    token_types: list[int] = field_value(reader, "tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    if len(token_types) != len(tokens):
        raise ValueError(f"the GGUF file has {len(tokens)} tokens but {len(token_types)} token types")
    special = _special_tokens(reader, tokens)
    if model_type == "gpt2":
        tokenizer = _byte_level_bpe(reader, tokens, token_types)
        # llama.cpp adds BOS to sentencepiece vocabularies unless told otherwise, and not to byte-level ones.
        add_bos = bool(field_value(reader, "tokenizer.ggml.add_bos_token", False))
    else:
        tokenizer = _sentencepiece_bpe(reader, tokens, special.get("unk_token"))
        add_bos = bool(field_value(reader, "tokenizer.ggml.add_bos_token", True))
    _add_special_tokens(tokenizer, tokens, token_types)

    bos = special.get("bos_token")
    if add_bos and bos is not None:
        bos_id = field_value(reader, "tokenizer.ggml.bos_token_id")
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
        )
    elif model_type == "gpt2":
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": bool(field_value(reader, "tokenizer.ggml.add_eos_token", False)),
        **special,
        "clean_up_tokenization_spaces": False,
    }
    chat_template = field_value(reader, "tokenizer.chat_template")
    if chat_template is not None:
        config["chat_template"] = chat_template
    return tokenizer, config


def _byte_level_bpe(reader: GGUFReader, tokens: list[str], token_types: list[int]) -> Tokenizer:
    alphabet = frozenset(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token_id, (token, token_type) in enumerate(zip(tokens, token_types, strict=True)):
        if token_type != _CONTROL and not set(token) <= alphabet:
            # A few converters store a token's text instead of its byte-level spelling.
            token = "".join(_bytes_to_unicode()[b] for b in token.encode("utf-8"))
        vocab.setdefault(token, token_id)
    merges = [tuple(merge.split(" ", 1)) for merge in field_value(reader, "tokenizer.ggml.merges") or []]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    pre = field_value(reader, "tokenizer.ggml.pre", "default")
    tokenizer.normalizer = normalizers.NFC() if pre in ("qwen2", "deepseek-r1-qwen") else None
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(reader: GGUFReader, tokens: list[str], unk_token: str | None) -> Tokenizer:
    """Llama-2 / Mistral style: "▁" marks spaces, unknown characters fall back to <0xNN> byte tokens."""
    vocab = {token: token_id for token_id, token in reversed(list(enumerate(tokens)))}
    scores = field_value(reader, "tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))]
    merges = field_value(reader, "tokenizer.ggml.merges")
    pairs = [tuple(m.split(" ", 1)) for m in merges] if merges else _merges_from_scores(tokens, scores, vocab)
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=pairs, unk_token=unk_token, fuse_unk=True, byte_fallback=True)
    )
    add_prefix = bool(field_value(reader, "tokenizer.ggml.add_space_prefix", True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if add_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if add_prefix else steps)
    return tokenizer


def _merges_from_scores(
    tokens: list[str], scores: list[float], vocab: dict[str, int]
) -> list[tuple[str, str]]:
    """BPE merges implied by a sentencepiece vocabulary: every split of a token into two tokens,
    best-scored result first (sentencepiece merges the pair whose result scores highest)."""
    ranked = []
    for token, score in zip(tokens, scores, strict=True):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _add_special_tokens(tokenizer: Tokenizer, tokens: list[str], token_types: list[int]) -> None:
    # Added tokens already in the vocabulary keep their ids; they are matched whole, before BPE.
    typed = list(zip(tokens, token_types, strict=True))
    special = [AddedToken(t, normalized=False, special=True) for t, k in typed if k in (_UNKNOWN, _CONTROL)]
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t, k in typed if k == _USER_DEFINED]
    )


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in _REGEX_SPLITS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_REGEX_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_SPLIT_PRES:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre not in _GPT2_PRES:
        logger.warning("unknown GGUF pre-tokenizer %r: falling back to GPT-2's split", pre)
    return byte_level


def _special_tokens(reader: GGUFReader, tokens: list[str]) -> dict[str, str]:
    names = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}
    special = {}
    for name, key in names.items():
        token_id = field_value(reader, f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens):
            special[name] = tokens[token_id]
    return special


@cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table
