"""LoadSlots: at most `limit` loads at once, the waiting ones in (ticket, asked) order."""

from __future__ import annotations

import pytest
from swiftserve.scheduler.load_slots import LoadSlots


def test_loads_past_the_limit_wait_and_go_oldest_ticket_first_then_in_the_order_asked():
    slots = LoadSlots(1)
    assert slots.ask("embed", ticket=2)
    assert not slots.ask("gemma", ticket=2)
    assert not slots.ask("smol", ticket=2)
    assert not slots.ask("other", ticket=1)  # an older request's load goes before ticket 2's
    assert slots.waiting == ["other", "gemma", "smol"]
    assert slots.release("embed") == ["other"]
    assert slots.release("other") == ["gemma"]
    assert slots.release("gemma") == ["smol"]
    assert slots.release("smol") == []
    assert slots.running == set() and slots.waiting == []


def test_a_limit_of_two_runs_two_and_a_release_grants_one():
    slots = LoadSlots(2)
    assert [slots.ask(n, ticket=1) for n in ("a", "b", "c", "d")] == [True, True, False, False]
    assert slots.running == {"a", "b"}
    assert slots.release("b") == ["c"]
    assert slots.running == {"a", "c"} and slots.waiting == ["d"]


def test_a_waiting_load_that_gives_up_leaves_the_queue_and_grants_nothing():
    slots = LoadSlots(1)
    slots.ask("a", ticket=1)
    slots.ask("b", ticket=1)
    slots.ask("c", ticket=1)
    assert slots.release("b") == []  # b was waiting: a still runs
    assert slots.waiting == ["c"]
    assert slots.release("a") == ["c"]


def test_asking_twice_for_one_model_and_a_limit_below_one_are_errors():
    slots = LoadSlots(1)
    slots.ask("a", ticket=1)
    with pytest.raises(ValueError, match="already asked"):
        slots.ask("a", ticket=2)
    with pytest.raises(ValueError, match=">= 1"):
        LoadSlots(0)


def test_without_a_limit_every_load_runs_at_once():
    slots = LoadSlots()
    assert all(slots.ask(name, ticket=1) for name in "abcdef")
    assert slots.running == set("abcdef") and slots.release("a") == []
