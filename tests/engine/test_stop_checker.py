"""Stop conditions: stop tokens, stop strings across token boundaries, lengths, streaming hold-back."""

from __future__ import annotations

import random

import pytest

from swiftserve.engine.stop_checker import RUNNING, StopResult, check_stop, emittable_length
from swiftserve.sampling_params import SamplingParams

EOS = 0


def _run(pieces: list[str], token_ids: list[int] | None = None, stop_ids=frozenset({EOS}), **params):
    """Feed token texts one by one like the engine; return (final text, result, streamed pieces)."""
    params.setdefault("max_tokens", 100)
    sp = SamplingParams(**params)
    token_ids = token_ids or [100 + i for i in range(len(pieces))]
    text, streamed, emitted = "", [], 0
    for n, (token_id, piece) in enumerate(zip(token_ids, pieces, strict=True), start=1):
        text += piece
        result = check_stop(sp, token_id, n, stop_ids, text, len(piece))
        if result.finish_reason is not None:
            if result.truncate_to is not None:
                text = text[: result.truncate_to]
            streamed.append(text[emitted:])
            return text, result, streamed
        safe = emittable_length(text, sp.stop)
        streamed.append(text[emitted:safe])
        emitted = max(emitted, safe)
    streamed.append(text[emitted:])  # the pieces ran out: the engine flushes what it held back
    return text, RUNNING, streamed


def test_stop_string_within_one_token_is_cut():
    text, result, _ = _run(["Hello", " wor", "ld. END", " more"], stop=("END",))
    assert (text, result) == ("Hello world. ", StopResult("stop", "END", len("Hello world. ")))


def test_stop_string_across_token_boundaries():
    text, result, streamed = _run(
        ["The ans", "wer is", " 4", "2<|", "st", "op|>", "tail"], stop=("<|stop|>",)
    )
    assert text == "The answer is 42"
    assert result.finish_reason == "stop" and result.stop_reason == "<|stop|>"
    assert "".join(streamed) == text
    assert not any("<" in piece for piece in streamed)  # no partial stop string was ever streamed


def test_include_stop_str_in_output_keeps_it_and_drops_what_follows():
    text, result, streamed = _run(
        ["a b", "c", "###", "x", "yz"], stop=("#x",), include_stop_str_in_output=True
    )
    assert text == "a bc###x"
    assert result == StopResult("stop", "#x", len("a bc###x"))
    assert "".join(streamed) == text
    text, _, _ = _run(["a ###xyz"], stop=("#x",), include_stop_str_in_output=True)
    assert text == "a ###x"


def test_earliest_completed_stop_wins():
    text, result, _ = _run(["one two three"], stop=("three", "two", "one two three"))
    assert (text, result.stop_reason) == ("one ", "two")
    # Same text, split differently: the same stop wins.
    text, result, _ = _run(["one t", "wo three"], stop=("three", "two", "one two three"))
    assert (text, result.stop_reason) == ("one ", "two")
    # Two stops ending at the same place: the longer one (starting first) cuts.
    text, result, _ = _run(["x", "abc"], stop=("bc", "abc"))
    assert (text, result.stop_reason) == ("x", "abc")


def test_stop_string_only_searched_in_the_new_tail():
    sp = SamplingParams(stop=("ab",), max_tokens=100)
    # "ab" lies entirely in old text (an earlier step would have caught it); only "c" is new.
    assert check_stop(sp, 5, 3, frozenset(), "xabc", 1) == RUNNING
    assert check_stop(sp, 5, 3, frozenset(), "xab", 1).truncate_to == 1
    assert check_stop(sp, 5, 3, frozenset(), "xab", 0) == RUNNING


def test_eos_and_stop_token_ids():
    sp = SamplingParams(stop_token_ids=(7,), max_tokens=10)
    stop_ids = frozenset({EOS, 7})
    assert check_stop(sp, EOS, 3, stop_ids, "abc", 0) == StopResult("stop", None, None)
    # A stop token's own text is dropped unless include_stop_str_in_output.
    assert check_stop(sp, 7, 3, stop_ids, "ab<x>", 3) == StopResult("stop", 7, 2)
    keep = SamplingParams(stop_token_ids=(7,), include_stop_str_in_output=True)
    assert check_stop(keep, 7, 3, stop_ids, "ab<x>", 3) == StopResult("stop", 7, None)
    # ignore_eos: the engine leaves eos out of stop_token_ids.
    assert check_stop(sp, EOS, 3, frozenset({7}), "abc", 1) == RUNNING


def test_min_tokens_defers_every_stop():
    sp = SamplingParams(min_tokens=3, stop=("x",), max_tokens=10)
    assert check_stop(sp, EOS, 2, frozenset({EOS}), "ax", 1) == RUNNING
    assert check_stop(sp, EOS, 3, frozenset({EOS}), "axy", 1).finish_reason == "stop"
    assert check_stop(sp, 9, 3, frozenset({EOS}), "axyx", 1) == StopResult("stop", "x", 3)


def test_length():
    sp = SamplingParams(max_tokens=3)
    assert check_stop(sp, 5, 2, frozenset(), "ab", 1) == RUNNING
    assert check_stop(sp, 5, 3, frozenset(), "abc", 1) == StopResult("length")
    assert check_stop(sp, EOS, 3, frozenset({EOS}), "abc", 0).finish_reason == "stop"  # stop beats length
    long = SamplingParams(max_tokens=50)
    assert check_stop(long, 5, 3, frozenset(), "abc", 1, 20, 20).finish_reason == "length"  # max_model_len
    assert check_stop(long, 5, 3, frozenset(), "abc", 1, 19, 20) == RUNNING


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("hello", (), 5),
        ("hello <", ("<|end|>",), 6),
        ("hello <|en", ("<|end|>",), 6),
        ("hello <|end|", ("<|end|>",), 6),
        ("hello <x", ("<|end|>",), 8),
        ("abab", ("abc",), 2),
        ("xaa", ("aab", "ab"), 1),
        ("", ("abc",), 0),
        ("ab", ("abcdef",), 0),
    ],
)
def test_emittable_length(text, stops, expected):
    assert emittable_length(text, stops) == expected


def test_streaming_never_shows_a_stop_string_under_random_splits():
    rng = random.Random(0)
    stops = ("STOP", "##", "abcab")
    for _ in range(300):
        body = "".join(rng.choice("abc #ST OP") for _ in range(rng.randint(1, 40)))
        pieces, i = [], 0
        while i < len(body):
            step = rng.randint(1, 5)
            pieces.append(body[i : i + step])
            i += step
        text, result, streamed = _run(pieces, stop=stops)
        assert "".join(streamed) == text
        # The final text never contains a stop string, and it is a prefix of the body.
        assert body.startswith(text)
        assert not any(s in text for s in stops)
        if result.finish_reason == "stop":
            # cut at the first place where any stop string completes
            ends = [body.find(s) + len(s) for s in stops if s in body]
            first_end = min(ends)
            assert any(
                body[:first_end].endswith(s) and text == body[: first_end - len(s)]
                for s in stops
                if result.stop_reason == s
            )
