"""Learned followers: does pre-warming the model that usually comes next in a session pay?

A client that chains two models itself (a small model drafts, a larger one answers from the draft)
declares no pipeline; swiftserve sees only two calls in one session (`session`, over HTTP the
`x-session-id` header or the body's `user`). SmolLM2 is pinned and drafts, Gemma 3 is on demand
and answers; Gemma is scaled to zero between sessions (as its idle timeout would). The same
server learns throughout; its first `--train` sessions teach it that the answer follows the draft.
Then each measured round runs the chain three times, with Gemma loading from snapshots (swiftserve's
default) or from the Hugging Face folders (snapshots off, loads of seconds): cold with no session
(nothing learned applies: no pre-warm), cold in a session (the draft's call starts Gemma's load),
and warm, one after another, so a slow spell of a shared host falls on all three. Medians of
the answer's latency (arrival to its last token), the draft's and the whole chain's, and the loads
the draft's calls started.

    python benchmarks/followers.py [--sessions 8] [--train 3] [--out benchmarks/results/followers.json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import print_table, write_json  # noqa: E402
from swiftserve import FollowerConfig, Server  # noqa: E402

DRAFT, ANSWER = "smollm2-135m-instruct", "gemma-3-270m"
TOKENS = 16


async def one_session(server: Server, session: str | None, i: int) -> dict:
    """The draft then the answer, in one session (None: in none); seconds of each and the whole."""
    start = time.perf_counter()
    question = [{"role": "user", "content": f"Question {i}: name a river in Europe."}]
    draft = await server.chat("draft", question, max_tokens=TOKENS, temperature=0, session=session)
    middle = time.perf_counter()
    prompt = [{"role": "user", "content": f"Improve this answer: {draft.choices[0].text}"}]
    await server.chat("answer", prompt, max_tokens=TOKENS, temperature=0, ignore_eos=True, session=session)
    end = time.perf_counter()
    return {"draft_s": middle - start, "answer_s": end - middle, "chain_s": end - start}


async def cold_session(server: Server, session: str | None, i: int, prewarms: list[str]) -> dict:
    await server.unload("answer")  # scaled to zero between sessions
    before = len(prewarms)
    return await one_session(server, session, i) | {"prewarmed": len(prewarms) - before}


async def run(snapshots: bool, sessions: int, train: int) -> list[dict]:
    """One server that learns; after `train` sessions, each measured pair runs the same chain
    cold twice: without a session (nothing to learn from, no pre-warm) and in one."""
    server = Server(
        models=[f"draft={DRAFT}"], on_demand=[f"answer={ANSWER}"], idle_timeout="1h",
        memory_budget="4GiB", max_model_len=512, kv_cache_memory="64MiB", snapshots=snapshots,
        followers=FollowerConfig(min_support=train),
    )  # fmt: skip
    prewarms: list[str] = []
    async with server:
        server.router.on_follower_prewarm = lambda name, follower: prewarms.append(follower)
        await server.load("answer")  # the first load writes the automatic snapshot: not measured
        for i in range(train):
            await cold_session(server, f"train-{i}", i, prewarms)
        pairs: dict[str, list[dict]] = {"warm": [], "off": [], "on": []}
        for i in range(sessions):
            pairs["off"].append(await cold_session(server, None, 100 + i, prewarms))
            pairs["on"].append(await cold_session(server, f"s{i}", 100 + i, prewarms))
            pairs["warm"].append(await one_session(server, None, 100 + i))
    return [_row(snapshots, mode, rows) for mode, rows in pairs.items()]


def _row(snapshots: bool, mode: str, rows: list[dict]) -> dict:
    median = lambda key: round(statistics.median(r[key] for r in rows), 3)  # noqa: E731
    return {
        "loads_from": "snapshot" if snapshots else "folder",
        "answer_model": "warm" if mode == "warm" else "cold",
        "pre_warm": {"warm": "-", "off": "no session", "on": "learned"}[mode],
        "draft_s": median("draft_s"),
        "answer_s": median("answer_s"),
        "chain_s": median("chain_s"),
        "loads_started_by_draft": sum(r.get("prewarmed", 0) for r in rows),
        "sessions": len(rows),
    }


async def main(args: argparse.Namespace) -> list[dict]:
    rows = []
    for snapshots in (True, False):
        rows += await run(snapshots, args.sessions, args.train)
        print_table(rows[-3:], list(rows[-1]))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="measured sessions per setting")
    parser.add_argument("--train", type=int, default=3, help="sessions that teach the router first")
    parser.add_argument("--out", default="benchmarks/results/followers.json")
    args = parser.parse_args()
    rows = asyncio.run(main(args))
    print_table(rows, list(rows[0]))
    write_json(args.out, {"draft": DRAFT, "answer": ANSWER, "tokens": TOKENS, "rows": rows})
