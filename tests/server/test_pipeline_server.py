"""A pipeline served over HTTP by the real server (`swiftserve launch --config`): listed in
/v1/models as kind pipeline, answered through the unchanged openai SDK (streamed too) with every
stage's usage and a `swiftserve` report, /v1/pipelines/{name} returns each stage, a bad value at
run time is a 400 naming the stage, and a bad pipeline stops the start naming it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest

from .live_server import CHAT, EMBED, Server, free_port

pytestmark = pytest.mark.slow

CONFIG = """
models:
  - {{name: embed, source: {embed}, policy: on-demand}}
  - {{name: small, source: {chat}, policy: on-demand, max_model_len: 512}}
pipelines:
  - name: rag
    stages:
      - {{id: context, kind: retrieve, model: embed, corpus: facts.jsonl, top_k: 1}}
      - id: drafts
        kind: chat
        model: small
        after: [context]
        fan_out: 2
        max_tokens: 6
        sampling: {{temperature: 0, ignore_eos: true}}
        messages:
          - {{role: user, content: "Facts: {{{{ stages.context }}}} Question: {{{{ input }}}} #{{{{ i }}}}"}}
      - id: final
        kind: chat
        model: small
        after: [drafts]
        max_tokens: 8
        sampling: {{temperature: 0, ignore_eos: true}}
        messages:
          - {{role: user, content: "Merge: {{{{ stages.drafts }}}} {{{{ messages[{index}].content }}}}"}}
"""
FACTS = ["Paris is the capital of France.", "The Nile is a river in Africa."]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _write(folder, index: int = 0):
    (folder / "facts.jsonl").write_text("\n".join(json.dumps({"text": f}) for f in FACTS))
    path = folder / "swiftserve.yaml"
    path.write_text(CONFIG.format(embed=EMBED, chat=CHAT, index=index))
    return path


@pytest.fixture(scope="module")
def server(smollm_dir, minilm_dir, tmp_path_factory):
    live = Server("--config", str(_write(tmp_path_factory.mktemp("rag"))), "--kv-cache-memory", "32MiB")
    yield live
    live.stop()


def test_a_pipeline_is_listed_and_answers_through_the_openai_sdk(server):
    cards = {m["id"]: m for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert (cards["rag"]["kind"], cards["rag"]["policy"]) == ("pipeline", "prewarm")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    reply = client.chat.completions.create(model="rag", messages=QUESTION)
    report = reply.model_extra["swiftserve"]
    assert reply.model == "rag" and reply.choices[0].message.content
    assert [s["id"] for s in report["stages"]] == ["context", "drafts", "final"]
    stage_tokens = sum(s["prompt_tokens"] + s["completion_tokens"] for s in report["stages"])
    assert reply.usage.total_tokens == stage_tokens and reply.usage.completion_tokens == 2 * 6 + 8
    chunks = list(client.chat.completions.create(model="rag", messages=QUESTION, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # greedy: the same answer
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens
    assert [c.model_extra["swiftserve"]["pipeline"] for c in chunks if c.model_extra.get("swiftserve")] == [
        "rag"
    ]
    assert client.models.retrieve("rag").model_extra["kind"] == "pipeline"
    assert server.metric('swiftserve_pipeline_requests_total{outcome="ok",pipeline="rag"}') == 2
    # the stages' tokens count for their models, as a direct request's do (two requests so far)
    assert server.metric('swiftserve_generation_tokens_total{model="small"}') == 2 * (2 * 6 + 8)
    small_prompt = sum(s["prompt_tokens"] for s in report["stages"] if s["model"] == "small")
    assert server.metric('swiftserve_prompt_tokens_total{model="small"}') == 2 * small_prompt
    assert server.metric('swiftserve_stage_latency_seconds_count{pipeline="rag",stage="drafts"}') == 2
    # small was cold at the first request (only embed loaded, to index the corpus): pre-warmed once.
    assert server.metric('swiftserve_prewarm_loads_total{model="small",pipeline="rag"}') == 1
    assert [s["load_started_by"] for s in report["stages"]] == ["", "prewarm", ""]


def test_the_debug_route_returns_every_stage(server):
    question = {"input": "What is the capital of France?"}
    answer = httpx.post(server.url + "/v1/pipelines/rag", json=question, timeout=300)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    stages = {s["report"]["id"]: s for s in body["stages"]}
    assert stages["context"]["output"] == [FACTS[0]]
    assert len(stages["drafts"]["output"]) == 2 and body["output"] == stages["final"]["output"]
    assert httpx.post(server.url + "/v1/pipelines/nope", json={"input": "x"}).status_code == 404
    assert httpx.post(server.url + "/v1/pipelines/rag", json={}).status_code == 400


def test_a_bad_value_at_run_time_is_a_400_naming_the_stage(smollm_dir, minilm_dir, tmp_path):
    live = Server("--config", str(_write(tmp_path, index=5)), "--kv-cache-memory", "32MiB")
    try:
        body = {"model": "rag", "messages": QUESTION}
        reply = httpx.post(live.url + "/v1/chat/completions", json=body, timeout=300)
        assert reply.status_code == 400, reply.text
        assert "stage 'final'" in reply.json()["error"]["message"]
        assert live.embed("still serving", model="embed").status_code == 200
    finally:
        live.stop()


def test_a_pipeline_with_a_cycle_stops_the_start_naming_it(tmp_path):
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("after: [context]", "after: [context, final]"))
    port = str(free_port())
    command = [sys.executable, "-m", "swiftserve.cli", "launch", "--config", str(path), "--port", port]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "pipelines[rag]" in result.stderr and "wait for each other" in result.stderr
