"""A retrieve stage's corpus: the file's checks and exact top-k by cosine."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from swiftserve.router.pipeline_corpus import Corpus, CorpusError, Passage, read_corpus


def test_read_corpus_takes_text_and_optional_ids(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "a"}\n\n{"id": "x", "text": "b"}\n')
    assert read_corpus(path) == [Passage("1", "a"), Passage("x", "b")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no passage"),
        ("{nope\n", r"docs\.jsonl:1: not JSON"),
        ('{"text": "a"}\n[1]\n', r"docs\.jsonl:2: each line must be an object"),
        ('{"text": ""}\n', r"docs\.jsonl:1: each line must be an object with a non-empty"),
    ],
)
def test_bad_corpus_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content)
    with pytest.raises(CorpusError, match=message):
        read_corpus(path)
    with pytest.raises(CorpusError, match="cannot read"):
        read_corpus(tmp_path / "missing.jsonl")


def test_top_k_is_exact_cosine_nearest_first_ties_in_file_order():
    passages = [Passage(str(i), t) for i, t in enumerate("abcde")]
    vectors = np.array([[1, 0], [0, 1], [2, 0.1], [-1, 0], [1, 0]], dtype=np.float32)
    corpus = Corpus(passages, vectors)
    assert [p.text for p in corpus.top_k(np.array([5.0, 0.0]), 3)] == ["a", "e", "c"]
    assert [p.text for p in corpus.top_k(np.array([0.0, 1.0]), 1)] == ["b"]
    assert len(corpus.top_k(np.array([1.0, 1.0]), 99)) == 5


def test_build_embeds_in_batches():
    calls = []

    async def embed(texts):
        calls.append(len(texts))
        return np.array([[len(t), 1.0] for t in texts])

    passages = [Passage(str(i), "x" * (i + 1)) for i in range(130)]
    corpus = asyncio.run(Corpus.build(passages, embed))
    assert calls == [64, 64, 2] and corpus.vectors.shape == (130, 2)
    assert np.allclose(np.linalg.norm(corpus.vectors, axis=1), 1.0)
