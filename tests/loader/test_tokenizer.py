"""load_tokenizer: the converted SmolLM2 tokenizer against transformers, special tokens, BOS rules."""

from __future__ import annotations

import copy
import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from swiftserve.loader import load_tokenizer

TEXTS = [
    "Hello world",
    "",
    " leading space and  double  spaces ",
    "digits 1234567890 and 3.14159, 2024-11-25, $1,000,000",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\tindent\ttabs",
    "unicode: héllo wörld naïve café — “quotes” ±×÷",
    "中文字符和日本語のテキスト, 한국어",
    "emoji 🤗🚀👩‍💻 and flags 🇫🇷",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>swiftserve<file_sep>main.py",
    "not special: <|im_start without end, <im_end|>",
    "'s 't 're 've 'm 'll 'd CAPS'LL",
    "\n\n\r\n   \n",
]


def test_encode_matches_transformers_gguf_tokenizer(smollm_dir, hf_gguf_tokenizer):
    info = load_tokenizer(smollm_dir)
    for text in TEXTS:
        assert info.encode(text) == hf_gguf_tokenizer.encode(text, add_special_tokens=True), text
        without = hf_gguf_tokenizer.encode(text, add_special_tokens=False)
        assert info.encode(text, add_special_tokens=False) == without, text


def test_non_ascii_numerals_split_like_llama_cpp(smollm_dir, hf_gguf_tokenizer):
    """llama.cpp (and SmolLM2's own tokenizer.json) isolate every \\p{N} character before GPT-2's split.

    transformers 5.x does not know the "smollm" pre-tokenizer name and keeps GPT-2's split alone,
    which only differs on numerals other than 0-9 (SmolLM2 has no merges with ASCII digits): there
    the reference is transformers' vocabulary with the digit split put in front.
    """
    info = load_tokenizer(smollm_dir)
    reference = copy.deepcopy(hf_gguf_tokenizer.backend_tokenizer)
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    for text in ["fractions ½ ¾ and powers x² y³", "Arabic-Indic ١٢٣ and Devanagari ४२", *TEXTS]:
        assert info.encode(text) == reference.encode(text).ids, text
    assert info.encode(" ½") == [info.tokenizer.token_to_id("Ġ"), *info.encode("½")]


def test_decode_matches_transformers_gguf_tokenizer(smollm_dir, hf_gguf_tokenizer):
    info = load_tokenizer(smollm_dir)
    for text in TEXTS:
        ids = info.encode(text)
        for skip in (True, False):
            assert info.decode(ids, skip_special_tokens=skip) == hf_gguf_tokenizer.decode(
                ids, skip_special_tokens=skip
            ), text
        assert info.decode(ids, skip_special_tokens=False) == text


def test_transformers_loads_converted_tokenizer_folder(smollm_dir):
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(smollm_dir)
    info = load_tokenizer(smollm_dir)
    assert (hf.bos_token, hf.eos_token) == (info.bos_token, info.eos_token)
    for text in TEXTS:
        assert hf.encode(text) == info.encode(text), text
        ids = info.encode(text)
        assert hf.decode(ids, skip_special_tokens=True) == info.decode(ids), text


def test_smollm_special_tokens(smollm_dir):
    info = load_tokenizer(smollm_dir)
    assert (info.bos_token, info.bos_token_id) == ("<|im_start|>", 1)
    assert (info.eos_token, info.eos_token_ids) == ("<|im_end|>", (2,))
    assert info.add_bos_token is False and info.vocab_size == 49152
    assert info.special_token_ids == frozenset(range(17))
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template


def test_minilm_matches_transformers_without_padding(minilm_dir):
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    info = load_tokenizer(minilm_dir)
    for text in ["Hello world", "A sentence, with PUNCTUATION and Ünïcödé.", ""]:
        assert info.encode(text) == hf.encode(text), text  # [CLS] ... [SEP], never padded to 128
    assert info.eos_token_ids == () and info.chat_template is None


def _write_folder(folder, post_processor=None, tokenizer_config=None, config=None, generation_config=None):
    vocab = {"<s>": 0, "</s>": 1, "<eot>": 2, "a": 3, "b": 4, "ab": 5}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<s>", "</s>", "<eot>"])
    if post_processor is not None:
        tokenizer.post_processor = post_processor
    folder.mkdir(exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    for name, data in [
        ("tokenizer_config.json", tokenizer_config),
        ("config.json", config),
        ("generation_config.json", generation_config),
    ]:
        if data is not None:
            (folder / name).write_text(json.dumps(data))
    return folder


def test_bos_prepended_only_when_asked_and_never_twice(tmp_path):
    wants_bos = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
    info = load_tokenizer(_write_folder(tmp_path / "a", tokenizer_config=wants_bos))
    assert info.encode("ab a") == [0, 5, 3]
    assert info.encode("ab a", add_special_tokens=False) == [5, 3]

    template = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    info = load_tokenizer(_write_folder(tmp_path / "b", post_processor=template, tokenizer_config=wants_bos))
    assert info.encode("ab a") == [0, 5, 3]  # the post-processor adds it; encode does not add another

    no_bos = {"bos_token": {"content": "<s>"}, "add_bos_token": False}
    info = load_tokenizer(_write_folder(tmp_path / "c", tokenizer_config=no_bos))
    assert info.encode("ab a") == [5, 3] and info.bos_token == "<s>" and info.bos_token_id == 0


def test_eos_ids_are_the_union_of_all_configs(tmp_path):
    folder = _write_folder(
        tmp_path / "m",
        tokenizer_config={"eos_token": "</s>", "chat_template": [{"name": "default", "template": "{{ 1 }}"}]},
        config={"eos_token_id": 1, "bos_token_id": 0},
        generation_config={"eos_token_id": [2, 1]},
    )
    info = load_tokenizer(folder)
    assert set(info.eos_token_ids) == {1, 2} and len(info.eos_token_ids) == 2
    assert info.bos_token == "<s>" and info.bos_token_id == 0  # from config.json
    assert info.special_token_ids == frozenset({0, 1, 2})
    assert info.chat_template == "{{ 1 }}"


def test_chat_template_jinja_file_wins(tmp_path):
    folder = _write_folder(tmp_path / "m", tokenizer_config={"chat_template": "old"})
    (folder / "chat_template.jinja").write_text("new")
    assert load_tokenizer(folder).chat_template == "new"


def test_missing_or_broken_tokenizer_raises(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


SPM_TEXTS = ["hello world", " the  hello", "Hello, World!", "in the\nworld\t", "", "zzz ü 🤗 <s> x</s>", "  "]


def test_sentencepiece_gguf_matches_transformers(tmp_path):
    import transformers

    from swiftserve.loader.gguf_convert import convert_gguf

    from .gguf_factory import tiny_hf_weights, write_tiny_gguf

    gguf_path = write_tiny_gguf(tmp_path / "spm.gguf", tiny_hf_weights(), tokenizer_model="llama")
    convert_gguf(gguf_path, tmp_path / "out", progress=False)
    info = load_tokenizer(tmp_path / "out")
    assert info.add_bos_token and info.bos_token == "<s>" and info.eos_token_ids == (2,)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="spm.gguf")
    from_folder = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in SPM_TEXTS:
        ids = info.encode(text)
        assert ids[0] == 1, text  # BOS, exactly once
        assert ids == reference.encode(text) == from_folder.encode(text), text
        assert info.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
