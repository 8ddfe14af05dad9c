"""Pipeline DAGs and templates, checked at load with exact expectations (no models)."""

from __future__ import annotations

import pytest
from swiftserve.router.pipeline_spec import Message, PipelineError, PipelineSpec, StageSpec
from swiftserve.router.pipeline_templates import PipelineInputError, Texts, compile_pipeline


def chat(id, after=(), content="{{ input }}", model="small", **kw):
    return StageSpec(id, "chat", model, tuple(after), (Message("user", content),), **kw)


def retrieve(id="context", model="embed"):
    return StageSpec(id, "retrieve", model, corpus="docs.jsonl", top_k=2)


DRAFT = "{{ stages.context }} Q: {{ input }} #{{ i }}"


def rag(**kw) -> PipelineSpec:
    return PipelineSpec(
        "rag",
        (
            chat("final", ["drafts"], "Merge: {{ stages.drafts }}", model="merge"),
            chat(
                "drafts", after=["context"], content="{{ stages.context }} Q: {{ input }} #{{ i }}", fan_out=3
            ),
            retrieve(),
        ),
        **kw,
    )


def test_stages_are_ordered_after_what_they_wait_for_and_the_final_stage_is_last():
    spec = rag()
    assert [s.id for s in spec.stages] == ["context", "drafts", "final"]
    assert spec.final.id == "final"
    assert spec.models() == ("embed", "small", "merge")
    assert spec.last_use() == {"embed": "context", "small": "drafts", "merge": "final"}
    assert spec.depth() == {"context": 1, "drafts": 2, "final": 3}


def test_independent_stages_keep_their_config_order_and_share_a_depth():
    spec = PipelineSpec("p", (chat("b", content="x"), chat("a", content="y"), chat("end", ["a", "b"], "z")))
    assert [s.id for s in spec.stages] == ["b", "a", "end"]
    assert spec.depth() == {"b": 1, "a": 1, "end": 2}


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ((), r"pipelines\[p\]: a pipeline needs at least one stage"),
        ((chat("a", after=["b"]), chat("b", after=["a"])), r"the stages \['a', 'b'\] wait for each other"),
        ((chat("a", after=["nope"]),), r"pipelines\[p\]\.stages\[a\]: after: no stage 'nope'"),
        ((chat("a"), chat("a")), r"stages\[a\]: two stages share this id"),
        ((chat("a"), chat("b")), r"exactly one stage must end the pipeline .* got \['a', 'b'\]"),
        ((chat("a-b"),), r"stages\[a-b\]: id: a stage id must be a name"),
        ((chat("a", fan_out=0),), r"fan_out: between 1 and 64"),
        ((StageSpec("a", "retrieve", "e"),), r"corpus: a retrieve stage needs a corpus"),
        ((StageSpec("a", "embed", "e", fan_out=2),), r"only chat and completion stages fan out"),
        ((StageSpec("a", "chat", "m"),), r"messages: a chat stage needs at least one message"),
        ((chat("a", sampling={"x": 1}, fan_out=1), chat("b", after=["a"], content="{{ stages.a }}")), None),
    ],
)
def test_bad_dags_name_the_pipeline_and_stage(stages, message):
    if message is None:
        PipelineSpec("p", stages)  # fine: sampling keys are checked where SamplingParams are built
        return
    with pytest.raises(PipelineError, match=message):
        PipelineSpec("p", stages)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{{ input ", r"stages\[b\]: messages\[0\]\.content: template error"),
        ("{{ question }}", r"stages\[b\]: messages\[0\]\.content: unknown name\(s\) question"),
        ("{{ stages.c }}", r"stages\.c is not a stage this one waits for \(after: \['a'\]\)"),
        ("{{ stages['c'] }}", r"stages\.c is not a stage this one waits for"),
    ],
)
def test_template_errors_are_found_at_load(content, message):
    # c runs beside b, so b cannot read it; end reads both.
    stages = (chat("a"), chat("c", content="x"), chat("b", ["a"], content), chat("end", ["b", "c"], "x"))
    with pytest.raises(PipelineError, match=message):
        compile_pipeline(PipelineSpec("p", stages))


def test_templates_render_inputs_upstream_outputs_and_the_fan_out_index():
    spec = rag()
    templates = compile_pipeline(spec)
    drafts = templates["drafts"].render(
        "messages[0].content", {"input": "Why?", "stages": {"context": Texts(["p1", "p2"])}, "i": 2}
    )
    assert drafts == "p1\n\np2 Q: Why? #2"
    with pytest.raises(PipelineInputError, match=r"stage 'final': messages\[0\]\.content: .*drafts"):
        templates["final"].render("messages[0].content", {"input": "x", "stages": {}, "i": 0})
