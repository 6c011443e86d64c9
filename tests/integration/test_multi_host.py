"""Several hosts behind one nginx: the shipped nginx/wsgi-fcgi-multi.conf
over two wsgi_fcgi backends on distinct loopback addresses (127.0.0.2 and
127.0.0.3, standing for two machines).  Requests spread over both, and a
backend stopped with TERM under a request loop loses no request
(fastcgi_next_upstream error timeout, max_fails)."""

import json
import re
import signal

import pytest
import requests
from support import RequestLoop, free_port, shipped_nginx_conf, wait_for

HOSTS = ("127.0.0.2", "127.0.0.3")


def two_host_conf(port, addresses):
    """The shipped file has three upstream servers: keep the first two."""
    text = shipped_nginx_conf("wsgi-fcgi-multi.conf", port, [*addresses, "127.0.0.1:1"])
    return re.sub(r"^[ \t]+server[ \t]+127\.0\.0\.1:1\b[^\n]*\n", "", text, flags=re.M)


@pytest.fixture
def two_hosts(start_wsgi_fcgi, start_nginx):
    backends = [start_wsgi_fcgi("envapp:app", address="%s:%d" % (host, free_port(host))) for host in HOSTS]
    port = free_port()
    nginx = start_nginx(None, two_host_conf(port, [b.address for b in backends]), port=port)
    return nginx, backends


def answer(response):
    assert response.status_code == 200, response.text
    return response.json()


def test_requests_spread_over_both_hosts(two_hosts):
    nginx, backends = two_hosts
    assert "127.0.0.1:1" not in nginx.conf_path.read_text()
    served = [answer(requests.get(nginx.url + "/?i=%d" % i, timeout=10)) for i in range(12)]
    by_pid = {}
    for result in served:
        by_pid.setdefault(result["pid"], 0)
        by_pid[result["pid"]] += 1
    assert len(by_pid) == 2 and min(by_pid.values()) >= 3, by_pid
    assert all(r["environ"]["REMOTE_ADDR"] == "127.0.0.1" for r in served)


def test_stopping_one_host_under_load_loses_no_request(two_hosts):
    nginx, backends = two_hosts
    loop = RequestLoop(nginx.url + "/", max_seconds=30)
    try:
        wait_for(lambda: loop.ok >= 20, 20, what="requests before the stop")
        backends[0].send_signal(signal.SIGTERM)
        assert backends[0].wait(20) == 0
        before = loop.ok
        wait_for(lambda: loop.ok >= before + 30, 20, what="requests after the stop")
    finally:
        loop.stop()
    assert loop.failures == []
    survivors = {json.loads(text)["pid"] for text in loop.pids[-20:]}
    assert len(survivors) == 1
