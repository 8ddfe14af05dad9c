"""Learned followers: does pre-warming the model that usually comes next in a session pay?

A client that chains two models itself (a small model drafts, a larger one answers from the draft)
declares no pipeline; swiftserve sees only two calls in one session (`session`, over HTTP the
`x-session-id` header or the body's `user`). SmolLM2 is pinned and drafts, Gemma 3 is on demand
and answers; Gemma is scaled to zero between sessions (as its idle timeout would). The same
sessions run with learning off and on, loads from snapshots (swiftserve's default) and from the
Hugging Face folders (snapshots off, loads of seconds). With learning on, the first `--train`
sessions teach the router that the answer follows the draft; the sessions after them are measured
in both settings: the answer's latency (arrival to its last token), the chain's, and how many
loads a call to the drafter started.

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


async def one_session(server: Server, session: str, i: int) -> dict:
    """The draft then the answer, in one session; seconds of each and of the whole."""
    start = time.perf_counter()
    question = [{"role": "user", "content": f"Question {i}: name a river in Europe."}]
    draft = await server.chat("draft", question, max_tokens=TOKENS, temperature=0, session=session)
    middle = time.perf_counter()
    text = draft.choices[0].text
    prompt = [{"role": "user", "content": f"Improve this answer: {text}"}]
    await server.chat("answer", prompt, max_tokens=TOKENS, temperature=0, ignore_eos=True, session=session)
    end = time.perf_counter()
    return {"draft_s": middle - start, "answer_s": end - middle, "chain_s": end - start}


async def run(snapshots: bool, learn: bool, sessions: int, train: int) -> dict:
    followers = FollowerConfig(enabled=learn, min_support=train)
    server = Server(
        models=[f"draft={DRAFT}"], on_demand=[f"answer={ANSWER}"], idle_timeout="1h",
        memory_budget="4GiB", max_model_len=512, kv_cache_memory="64MiB", snapshots=snapshots,
        followers=followers,
    )  # fmt: skip
    prewarms: list[str] = []
    async with server:
        server.router.on_follower_prewarm = lambda name, follower: prewarms.append(follower)
        await server.load("answer")  # the first load writes the automatic snapshot: not measured
        warm = [await one_session(server, f"warm-{i}", -i) for i in range(2)]
        rows = []
        for i in range(train + sessions):
            await server.unload("answer")  # scaled to zero between sessions
            await server.unload("answer")  # parked weights too
            before = len(prewarms)
            row = await one_session(server, f"s{i}", i)
            rows.append(row | {"prewarmed": len(prewarms) - before})
    measured = rows[train:]
    median = lambda key, rs=measured: statistics.median(r[key] for r in rs)  # noqa: E731
    return {
        "loads_from": "snapshot" if snapshots else "folder",
        "learning": "on" if learn else "off",
        "answer_warm_s": round(median("answer_s", warm), 3),
        "answer_s": round(median("answer_s"), 3),
        "draft_s": round(median("draft_s"), 3),
        "chain_s": round(median("chain_s"), 3),
        "answer_cold_extra_s": round(median("answer_s") - median("answer_s", warm), 3),
        "prewarms_in_measured": sum(r["prewarmed"] for r in measured),
        "sessions_measured": len(measured),
    }


async def main(args: argparse.Namespace) -> list[dict]:
    rows = []
    for snapshots in (True, False):
        for learn in (False, True):
            rows.append(await run(snapshots, learn, args.sessions, args.train))
            print_table(rows[-1:], list(rows[-1]))
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
