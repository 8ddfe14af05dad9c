"""The router's admission gate: plain counting under a bound, exact."""

import pytest
from swiftserve.router.admission import Gate


def test_a_gate_lets_in_up_to_its_bound_and_counts_what_leaves():
    gate = Gate(3)
    assert gate.try_enter(2) and not gate.try_enter(2) and gate.num_inside == 2  # a refusal counts nothing
    assert gate.try_enter() and not gate.try_enter()
    gate.leave(2)
    assert gate.num_inside == 1 and gate.try_enter(2)
    with pytest.raises(ValueError):
        gate.leave(4)
    assert not Gate(0).try_enter() and Gate(None).try_enter(10**6)
    with pytest.raises(ValueError):
        Gate(-1)
