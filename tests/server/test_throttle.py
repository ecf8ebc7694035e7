"""Failed logins per client: refused past the limit until the oldest failure leaves the window."""

from __future__ import annotations

import pytest

from corral.errors import UsageError
from corral.server._throttle import LoginThrottle
from corral.testing import FakeClock


def test_a_client_waits_after_too_many_failures_until_the_oldest_one_expires():
    clock = FakeClock()
    throttle = LoginThrottle(clock, attempts=3, window_s=60)
    for _ in range(2):
        throttle.failed("1.2.3.4")
        clock.advance(10)
    assert throttle.retry_after_s("1.2.3.4") == 0
    throttle.failed("1.2.3.4")  # the third failure, 20 s after the first
    assert throttle.retry_after_s("1.2.3.4") == pytest.approx(40)
    assert throttle.retry_after_s("5.6.7.8") == 0, "other clients are not affected"
    clock.advance(40)
    assert throttle.retry_after_s("1.2.3.4") == 0


def test_a_success_clears_the_count():
    clock = FakeClock()
    throttle = LoginThrottle(clock, attempts=2, window_s=60)
    throttle.failed("a")
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.retry_after_s("a") == 0


def test_memory_stays_bounded_by_forgetting_the_oldest_clients():
    clock = FakeClock()
    throttle = LoginThrottle(clock, attempts=1, window_s=60, max_clients=2)
    for client in ("a", "b", "c"):
        throttle.failed(client)
    assert throttle.retry_after_s("a") == 0
    assert throttle.retry_after_s("b") > 0 and throttle.retry_after_s("c") > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts >= 1 .got 0."),
        ({"window_s": 0}, "window_s > 0 .got 0."),
        ({"max_clients": 0}, "max_clients >= 1 .got 0."),
    ],
    ids=["attempts", "window", "clients"],
)
def test_bad_limits_are_a_usage_error(kwargs, message):
    with pytest.raises(UsageError, match=message):
        LoginThrottle(FakeClock(), **kwargs)
