"""How often the watchdog looks at the running requests."""

import pytest

from wsgi_fcgi.watchdog import Watchdog


@pytest.mark.parametrize("slow, timeout, interval", [
    (0.5, 0.0, 0.125),    # a quarter of the only timeout
    (10.0, 0.2, 0.05),    # of the shorter one
    (0.0, 30.0, 1.0),     # at least once a second
    (0.01, 0.0, 0.02),    # at most every 20 ms
])
def test_the_look_interval_is_a_quarter_of_the_shorter_timeout(slow, timeout, interval):
    assert Watchdog(None, slow_timeout=slow, request_timeout=timeout).interval == pytest.approx(interval)
