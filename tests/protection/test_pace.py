"""The per-connection token bucket, on a clock the test moves."""

from __future__ import annotations

from server.limits import Pace


def test_a_burst_up_to_the_rate_passes_then_the_client_waits() -> None:
    pace = Pace(10, now=0.0)
    assert [pace.charge(1, 0.0) for _ in range(10)] == [0.0] * 10
    assert pace.charge(1, 0.0) == 0.1  # one message into debt: wait a tenth of a second
    assert pace.over_since == 0.0
    assert pace.charge(1, 0.1) == 0.1  # still at the rate, still over it


def test_a_frame_larger_than_a_second_is_admitted_and_paid_for_by_waiting() -> None:
    pace = Pace(1000, now=0.0)
    assert pace.charge(3000, 0.0) == 2.0
    assert pace.charge(1, 2.0) == 0.001


def test_over_since_clears_once_the_bucket_refills() -> None:
    pace = Pace(10, now=0.0)
    for _ in range(11):
        pace.charge(1, 0.0)
    assert pace.over_since == 0.0
    assert pace.charge(1, 0.5) == 0.0  # partly refilled: within its rate, but not yet clear
    assert pace.over_since == 0.0
    assert pace.charge(1, 5.0) == 0.0  # a full bucket: the client slowed down
    assert pace.over_since is None


def test_try_take_refuses_without_taking() -> None:
    pace = Pace(2, now=0.0)
    assert pace.try_take(1, 0.0) == 0.0
    assert pace.try_take(1, 0.0) == 0.0
    assert pace.try_take(1, 0.0) == 0.5
    assert pace.try_take(1, 0.5) == 0.0  # what it refused was not counted
    assert pace.try_take(5, 0.5) > 0  # larger than a second: only from a full bucket
    assert pace.try_take(5, 10.0) == 0.0
