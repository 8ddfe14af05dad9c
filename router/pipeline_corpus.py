"""A retrieve stage's corpus: a JSONL file of passages, embedded once when the pipeline is
registered, searched exactly per request.

Each line is an object with a "text" (and optionally an "id"). The vectors are L2-normalized
float32 rows, so the k nearest passages by cosine are one matrix-vector product and a partial
sort: exact, and at the sizes a corpus file holds (up to ~10^5 passages: 150 MB at 384
dimensions, well under a millisecond per thousand rows here) faster than building an approximate
index; beyond that a vector-search library belongs in front of it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBED_BATCH = 64  # passages per embedding call while indexing


class CorpusError(ValueError):
    """A corpus file that cannot be read; the message names the file (and the line)."""


@dataclass(frozen=True)
class Passage:
    id: str
    text: str


def read_corpus(path: str | Path) -> list[Passage]:
    """The passages of a JSONL file, in file order; blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read the corpus ({exc})") from None
    passages = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            passages.append(_passage(path, number, line))
    if not passages:
        raise CorpusError(f"{path}: the corpus holds no passage")
    return passages


def _passage(path: Path, number: int, line: str) -> Passage:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}:{number}: not JSON ({exc.msg})") from None
    if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"]:
        raise CorpusError(f'{path}:{number}: each line must be an object with a non-empty "text"')
    return Passage(str(item.get("id", number)), item["text"])


class Corpus:
    """Passages and their normalized vectors (one row each)."""

    def __init__(self, passages: Sequence[Passage], vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or len(vectors) != len(passages):
            raise ValueError(f"{len(passages)} passages but vectors of shape {vectors.shape}")
        self.passages = list(passages)
        self.vectors = _normalized(vectors)

    @classmethod
    async def build(
        cls, passages: Sequence[Passage], embed: Callable[[list[str]], Awaitable[np.ndarray]]
    ) -> Corpus:
        """Embeds every passage (EMBED_BATCH at a time) with `embed` (texts -> rows)."""
        texts = [p.text for p in passages]
        rows = [await embed(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)]
        return cls(passages, np.concatenate([np.asarray(r, dtype=np.float32) for r in rows]))

    def top_k(self, query: np.ndarray, k: int) -> list[Passage]:
        """The k passages nearest to `query` by cosine, nearest first (ties: file order)."""
        scores = self.vectors @ _normalized(np.asarray(query, dtype=np.float32)[None, :])[0]
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.lexsort((best, -scores[best]))]
        return [self.passages[i] for i in best]


def _normalized(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, np.float32(1e-12))
