"""engine/memory.py: returning freed memory leaves nothing for the next collection, and the startup
heap stays frozen while any server runs, thawed by the last one to stop."""

from __future__ import annotations

import gc

import pytest

from swiftserve.engine import memory


@pytest.fixture
def no_server_running():
    assert memory._Freezes.count == 0, "a server of another test is still running"
    yield
    while memory._Freezes.count:
        memory.thaw_startup_heap()


def test_returning_memory_makes_no_garbage_of_its_own():
    # Each call used to build a CDLL (a reference cycle) after its own collection.
    memory.return_freed_memory()
    memory.return_freed_memory()
    assert gc.collect() == 0


def test_the_heap_stays_frozen_until_the_last_server_stops(no_server_running):
    memory.freeze_startup_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # this test process's imports: torch alone has far more
    memory.freeze_startup_heap()  # a second server in the same process
    assert gc.get_freeze_count() == frozen
    memory.thaw_startup_heap()
    assert gc.get_freeze_count() == frozen  # the first server still runs
    memory.thaw_startup_heap()
    assert gc.get_freeze_count() == 0
    memory.thaw_startup_heap()  # one more stop than starts changes nothing
    assert memory._Freezes.count == 0


def test_a_frozen_heap_keeps_collecting_what_was_made_after_it(no_server_running):
    memory.freeze_startup_heap()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made while a server runs
    del a, b
    assert gc.collect() >= 2
    memory.thaw_startup_heap()
