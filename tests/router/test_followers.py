"""router/followers.py: successor counts over sessions, exact."""

from __future__ import annotations

import pytest
from swiftserve.router.followers import FollowerConfig, FollowerStats


def _stats(**kwargs) -> FollowerStats:
    return FollowerStats(FollowerConfig(**({"window_s": 10.0, "min_support": 2, "min_share": 0.5} | kwargs)))


def test_a_follower_needs_its_support_and_its_share():
    stats = _stats()
    stats.observe("s1", "embed", 0.0)
    stats.observe("s1", "chat", 1.0)
    assert stats.counts("embed") == (1, {"chat": 1})
    assert stats.followers("embed") == []  # support 1 < 2
    stats.observe("s2", "embed", 2.0)
    stats.observe("s2", "chat", 3.0)
    assert stats.followers("embed") == ["chat"]  # 2 of 2
    for session in ("s3", "s4", "s5"):
        stats.observe(session, "embed", 4.0)
        stats.observe(session, "other", 4.5)
    assert stats.counts("embed") == (5, {"chat": 2, "other": 3})
    assert stats.followers("embed") == ["other"]  # chat 2 of 5 < half; other 3 of 5


def test_a_call_past_the_window_follows_nothing():
    stats = _stats()
    for t in (0.0, 20.0, 40.0):
        stats.observe("s", "embed", t)
        stats.observe("s", "chat", t + 11.0)  # 11 s later: past the 10 s window
    assert stats.counts("embed") == (3, {})
    assert stats.followers("embed") == []


def test_a_quiet_session_is_closed_by_the_next_observation():
    stats = _stats()
    stats.observe("s", "embed", 0.0)
    assert stats.counts("embed") == (0, {})  # still open: its successor may come
    stats.observe("t", "chat", 10.5)  # s's last call is now older than the window
    assert stats.counts("embed") == (1, {})


def test_repeated_calls_count_against_the_share_and_are_never_followers():
    stats = _stats()
    for session in ("a", "b"):
        for model in ("chat", "chat", "chat", "big"):
            stats.observe(session, model, 1.0)
    assert stats.counts("chat") == (6, {"chat": 4, "big": 2})
    assert stats.followers("chat") == []  # big 2 of 6; chat itself never


def test_sessions_are_kept_apart():
    stats = _stats(min_support=1, min_share=0.1)
    stats.observe("a", "embed", 0.0)
    stats.observe("b", "chat", 1.0)  # another session: not embed's successor
    stats.observe("a", "big", 2.0)
    assert stats.followers("embed") == ["big"]
    assert stats.followers("chat") == []


def test_followers_are_ordered_by_count_then_name():
    stats = _stats(min_support=1, min_share=0.1)
    for i, after in enumerate(["b", "c", "c", "a", "b", "c"]):
        stats.observe(f"s{i}", "x", float(i))
        stats.observe(f"s{i}", after, float(i))
    assert stats.followers("x") == ["c", "b", "a"]


def test_the_oldest_session_past_max_sessions_is_closed():
    stats = _stats(max_sessions=2)
    stats.observe("a", "embed", 0.0)
    stats.observe("b", "embed", 1.0)
    stats.observe("c", "embed", 2.0)  # a is dropped and counts as followed by nothing
    assert stats.counts("embed") == (1, {})
    stats.observe("a", "chat", 3.0)  # a new session now, not embed's successor; b is dropped
    assert stats.counts("embed") == (2, {})


@pytest.mark.parametrize(
    ("key", "value"),
    [("window_s", 0.0), ("min_support", 0), ("min_share", 0.0), ("min_share", 1.5), ("max_sessions", 0)],
)
def test_bad_configs_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"followers.{key.removesuffix('_s')}"):
        FollowerConfig(**{key: value})
