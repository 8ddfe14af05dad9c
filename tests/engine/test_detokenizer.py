"""Incremental detokenizer against tokenizer.decode on byte-level BPEs (a tiny trained one and SmolLM2)."""

from __future__ import annotations

import random

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from swiftserve.engine.detokenizer import IncrementalDetokenizer

_ALPHABET = list("abcdefgh xyz,.!\n") + ["é", "ü", "ß", "中", "文", "字", "😀", "🚀", "👍🏽", "Ω", "→"]
_ALPHABET += [" 中文", " café"]


def _random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


@pytest.fixture(scope="module")
def tiny_bpe() -> tokenizers.Tokenizer:
    """A byte-level BPE trained on multi-byte text: many tokens hold part of a UTF-8 character."""
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    corpus = [_random_text(rng, 40) for _ in range(300)] + ["héllo wörld 中文字符 😀🚀 café crème"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


@pytest.fixture(scope="module")
def smollm_tokenizer(smollm_dir) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(smollm_dir / "tokenizer.json"))


def _stream(tokenizer, prompt_ids, output_ids, skip_special_tokens=True) -> tuple[list[str], str]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, skip_special_tokens)
    pieces = [detok.append(t) for t in output_ids]
    pieces.append(detok.flush())
    assert detok.text == "".join(pieces)
    return pieces, detok.text


def _check_round_trips(tokenizer: tokenizers.Tokenizer, num_cases: int = 200) -> None:
    rng = random.Random(1)
    for _ in range(num_cases):
        prompt = tokenizer.encode(_random_text(rng, rng.randint(0, 8))).ids
        output = tokenizer.encode(_random_text(rng, rng.randint(1, 30))).ids
        pieces, text = _stream(tokenizer, prompt, output)
        assert text == tokenizer.decode(output)
        assert not any("\ufffd" in piece for piece in pieces)  # valid text never shows half a char


def _check_random_ids(tokenizer: tokenizers.Tokenizer, num_cases: int = 200) -> None:
    """Arbitrary id streams (invalid UTF-8, special tokens) still add up to decode(all ids)."""
    rng = random.Random(2)
    vocab_size = tokenizer.get_vocab_size()
    for case in range(num_cases):
        prompt = [rng.randrange(vocab_size) for _ in range(rng.randint(0, 6))]
        output = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 25))]
        skip = case % 2 == 0
        _, text = _stream(tokenizer, prompt, output, skip)
        assert text == tokenizer.decode(output, skip_special_tokens=skip)


def test_tiny_bpe_splits_characters_across_tokens(tiny_bpe):
    # The test is only meaningful if some tokens decode to part of a character.
    partial = [i for i in range(tiny_bpe.get_vocab_size()) if "\ufffd" in tiny_bpe.decode([i])]
    assert partial


def test_tiny_bpe_round_trips(tiny_bpe):
    _check_round_trips(tiny_bpe)


def test_tiny_bpe_random_ids(tiny_bpe):
    _check_random_ids(tiny_bpe)


def test_split_character_is_withheld_then_emitted_whole(tiny_bpe):
    # Single-byte tokens for the 4 bytes of an emoji: nothing until the last byte arrives.
    byte_tokens = [tiny_bpe.token_to_id(c) for c in _byte_chars("😀")]
    assert None not in byte_tokens
    detok = IncrementalDetokenizer(tiny_bpe, tiny_bpe.encode("hi").ids)
    assert [detok.append(t) for t in byte_tokens] == ["", "", "", "😀"]
    assert detok.num_pending_tokens == 0


def test_flush_emits_a_dangling_partial_character(tiny_bpe):
    first_byte = tiny_bpe.token_to_id(_byte_chars("中")[0])
    detok = IncrementalDetokenizer(tiny_bpe, [])
    assert detok.append(tiny_bpe.token_to_id("a")) == "a"
    assert detok.append(first_byte) == ""
    assert detok.num_pending_tokens == 1
    assert detok.flush() == "\ufffd"
    assert detok.text == tiny_bpe.decode([tiny_bpe.token_to_id("a"), first_byte])


def test_prompt_ending_mid_character_does_not_leak_into_output(tiny_bpe):
    chars = _byte_chars("中")
    prompt = [tiny_bpe.token_to_id(c) for c in chars[:2]]
    output = [tiny_bpe.token_to_id(chars[2]), tiny_bpe.token_to_id("a")]
    _, text = _stream(tiny_bpe, prompt, output)
    assert text == tiny_bpe.decode(output)


def test_special_tokens_are_skipped_or_kept(tiny_bpe):
    eos = tiny_bpe.token_to_id("<|endoftext|>")
    ids = tiny_bpe.encode("café").ids + [eos]
    assert _stream(tiny_bpe, [], ids, True)[1] == "café"
    assert _stream(tiny_bpe, [], ids, False)[1] == "café<|endoftext|>"


@pytest.mark.slow
def test_smollm_round_trips(smollm_tokenizer):
    _check_round_trips(smollm_tokenizer)


@pytest.mark.slow
def test_smollm_random_ids(smollm_tokenizer):
    _check_random_ids(smollm_tokenizer)


@pytest.mark.slow
def test_smollm_streams_chat_text_with_leading_spaces(smollm_tokenizer):
    prompt = smollm_tokenizer.encode("<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n").ids
    output = smollm_tokenizer.encode(" Hello there — ça va? 你好 👋 done").ids
    pieces, text = _stream(smollm_tokenizer, prompt, output)
    assert text == " Hello there — ça va? 你好 👋 done"
    assert "" in pieces[:-1]  # some characters did span tokens


def _byte_chars(text: str) -> list[str]:
    """The ByteLevel alphabet characters of each UTF-8 byte of text (single-byte token strings)."""
    return [_BYTES_TO_UNICODE[b] for b in text.encode("utf-8")]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, as the ByteLevel pre-tokenizer uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_BYTES_TO_UNICODE = _bytes_to_unicode()
