"""Non-special added tokens reach llguidance as ordinary tokens: the tokenizer.json rewrite on a
small BPE tokenizer with exact expected entries, and Gemma 3's `</iframe>` (id 236, added but not
special) accepted inside a JSON string."""

from __future__ import annotations

import json

import pytest
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import BPE

from swiftserve.loader import load_tokenizer, resolve_model
from swiftserve.model_runner.grammar.plain_added_tokens import plain_added_tokens
from swiftserve.structured_outputs import StructuredOutputs


def _tokenizer() -> Tokenizer:
    """Vocabulary a, </b>, <x>, c; added: </b> (plain, in the vocabulary under its id), <x>
    (special), <y> (plain, not in the vocabulary: a new id 4)."""
    tokenizer = Tokenizer(BPE(vocab={"a": 0, "</b>": 1, "<x>": 2, "c": 3}, merges=[]))
    tokenizer.add_tokens([AddedToken("</b>", special=False)])
    tokenizer.add_special_tokens([AddedToken("<x>", special=True)])
    tokenizer.add_tokens([AddedToken("<y>", special=False)])
    return tokenizer


def test_a_plain_added_token_in_the_vocabulary_under_its_id_is_left_to_it():
    tokenizer = _tokenizer()
    out = json.loads(plain_added_tokens(tokenizer))
    assert [(t["id"], t["content"], t["special"]) for t in out["added_tokens"]] == [
        (2, "<x>", True),
        (4, "<y>", False),
    ]
    theirs = json.loads(tokenizer.to_str())
    assert {k: v for k, v in out.items() if k != "added_tokens"} == {
        k: v for k, v in theirs.items() if k != "added_tokens"
    }


def test_without_plain_added_tokens_the_text_is_the_tokenizers_own():
    tokenizer = Tokenizer(BPE(vocab={"a": 0, "<x>": 1}, merges=[]))
    tokenizer.add_special_tokens([AddedToken("<x>", special=True)])
    assert plain_added_tokens(tokenizer) == tokenizer.to_str()


@pytest.mark.slow
def test_gemma3s_iframe_tag_is_accepted_inside_a_json_string():
    pytest.importorskip("llguidance")
    from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend

    tokenizer = load_tokenizer(resolve_model("gemma-3-270m"))
    ids = tokenizer.encode('"</iframe>"', add_special_tokens=False)
    assert 236 in ids  # the added token, split out of the text as Hugging Face does
    backend = LLGuidanceBackend(tokenizer.tokenizer, 262144, tokenizer.eos_token_ids)
    matcher = backend.compile(StructuredOutputs(json={"type": "string"})).new_matcher()
    for token_id in ids:
        assert matcher.accept(token_id), matcher.error()
    assert matcher.error() is None
