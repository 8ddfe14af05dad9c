"""Non-special added tokens reach llguidance as ordinary tokens: the JSON rewrite on exact values,
and Gemma 3's `</iframe>` (id 236, added but not special) accepted inside a JSON string."""

from __future__ import annotations

import json

import pytest

from swiftserve.loader import load_tokenizer, resolve_model
from swiftserve.model_runner.grammar.plain_added_tokens import plain_added_tokens
from swiftserve.structured_outputs import StructuredOutputs


def _tokenizer_json(added: list[dict], vocab: dict[str, int] | list) -> str:
    return json.dumps({"added_tokens": added, "model": {"type": "BPE", "vocab": vocab}})


def _added(id: int, content: str, special: bool) -> dict:
    return {"id": id, "content": content, "special": special}


def test_a_non_special_added_token_in_the_vocabulary_under_its_id_is_left_to_it():
    vocab = {"a": 0, "</b>": 1, "<x>": 2, "c": 3}
    added = [
        _added(1, "</b>", False),
        _added(2, "<x>", True),
        _added(4, "<y>", False),
        _added(3, "</b>", False),
    ]
    out = json.loads(plain_added_tokens(_tokenizer_json(added, vocab)))
    # kept: the special one, one missing from the vocabulary, one there under another id
    assert out["added_tokens"] == [added[1], added[2], added[3]]
    assert out["model"]["vocab"] == vocab


def test_nothing_to_leave_returns_the_same_text():
    only_special = _tokenizer_json([_added(2, "<x>", True)], {"<x>": 2})
    assert plain_added_tokens(only_special) is only_special
    unigram = _tokenizer_json([_added(1, "</b>", False)], [["</b>", 0.0]])
    assert plain_added_tokens(unigram) is unigram


@pytest.mark.slow
def test_gemma3s_iframe_tag_is_accepted_inside_a_json_string():
    pytest.importorskip("llguidance")
    from swiftserve.model_runner.grammar.llguidance_backend import LLGuidanceBackend

    tokenizer = load_tokenizer(resolve_model("gemma-3-270m"))
    ids = tokenizer.encode('"</iframe>"', add_special_tokens=False)
    assert 236 in ids  # the added token, split out of the text as Hugging Face does
    backend = LLGuidanceBackend(tokenizer.tokenizer.to_str(), 262144, tokenizer.eos_token_ids)
    matcher = backend.compile(StructuredOutputs(json={"type": "string"})).new_matcher()
    for token_id in ids:
        assert matcher.accept(token_id), matcher.error()
    assert matcher.error() is None
