"""The static deployment's pipelines, run by the client: one model server after another."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import jinja2
import numpy as np

from benchmarks.compound.client import chat, complete, embed
from benchmarks.compound.pipelines import CORPUS, DRAFT, DRAFT_TOKENS, MERGE, MERGE_TOKENS, TOP_K


class Orchestrator:
    """The static deployment's pipeline: the client calls each model's server in turn, as an
    application calling separate model services does; prompts rendered from the same templates as
    swiftserve's stages, so both systems run the same model calls."""

    def __init__(self, routes: dict[str, str], fixed_length: Callable[[str, int], dict]) -> None:
        self.routes, self.fixed_length = routes, fixed_length
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        self.draft, self.merge = env.from_string(DRAFT), env.from_string(MERGE)
        self.passages = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]
        self.vectors: np.ndarray | None = None

    async def index(self, client: httpx.AsyncClient) -> None:
        self.vectors = _normalized(await embed(client, self.routes["embed"], self.passages))

    async def run(self, client: httpx.AsyncClient, question: str, fan_out: int) -> dict:
        start = time.perf_counter()
        query = _normalized(await embed(client, self.routes["embed"], [question]))[0]
        order = np.argsort(-(self.vectors @ query), kind="stable")[:TOP_K]
        context = "\n\n".join(self.passages[i] for i in order)
        retrieved = time.perf_counter()
        drafts = await asyncio.gather(*(
            chat(client, self.routes["smol"], "smol",
                 self.draft.render(input=question, i=i, stages={"context": context}),
                 self.fixed_length("smol", DRAFT_TOKENS))
            for i in range(fan_out)
        ))  # fmt: skip
        drafted = time.perf_counter()
        texts = "\n\n".join(d["choices"][0]["message"]["content"] for d in drafts)
        merge = self.merge.render(input=question, stages={"drafts": texts})
        final = await complete(
            client, self.routes["big"], "big", merge, self.fixed_length("big", MERGE_TOKENS)
        )
        end = time.perf_counter()
        stages = {"context": retrieved - start, "drafts": drafted - retrieved, "final": end - drafted}
        return {"final": final, "stages_s": stages}


def _normalized(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)
