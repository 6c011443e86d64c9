"""Counters.count_request: the status classes and codes a response counts in
(scoreboard.py), the same whatever was counted before it."""

from wsgi_fcgi.scoreboard import COUNTER_NAMES, Counters

CASES = [  # (status line, aborted) -> the class, and the code counted one by one if any
    (("200 OK", False), ("2xx", 200)),
    (("404 Not Found", True), ("4xx", 404)),  # a status was sent: aborted does not matter
    (("299 Odd", False), ("2xx", None)),
    (("999 Weird", False), ("none", None)),
    (("099 Low", False), ("none", None)),
    (("xyz", True), ("4xx", 499)),  # no valid status, the web server aborted it
    (("xyz", False), ("none", None)),
    ((None, True), ("4xx", 499)),
    ((None, False), ("none", None)),
    (("", False), ("none", None)),
]


def counted(status, aborted) -> set:
    """The status counters one request with `status` adds to."""
    counters = Counters()
    counters.count_request(status, aborted, 10, 20, 0.001)
    return {name for name, value in zip(COUNTER_NAMES, counters.values, strict=True)
            if value and name.startswith(("class_", "code_"))}


def test_each_status_counts_in_its_class_and_code():
    for (status, aborted), (klass, code) in CASES:
        expected = {"class_" + klass} | ({"code_%d" % code} if code else set())
        assert counted(status, aborted) == expected, (status, aborted)


def test_remembered_statuses_do_not_change_the_counts():
    """The status -> counters lookup is remembered: the same answers in any
    order, "xyz" aborted and not included."""
    for (status, aborted), _ in CASES + CASES[::-1]:
        counted(status, aborted)
    test_each_status_counts_in_its_class_and_code()
