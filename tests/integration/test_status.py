"""Status and ping pages through nginx; slow-request log; request timeout."""

import json
import random
import time

import requests
from support import fastcgi_location, pool_status, wait_for, worker_pids

STATUS = ("--status-path", "/fcgi-status", "--ping-path", "/fcgi-ping")


def _status(address):
    return pool_status(address, "/fcgi-status")


def _pids(address):
    return worker_pids(address, "/fcgi-status")


def _ready(address, count):
    return wait_for(lambda: len(_pids(address)) == count and _pids(address), 20, interval=0.2,
                    what="%d ready workers" % count)


def test_status_page_in_three_formats_and_ping_via_nginx(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", "--workers", "2", "--pool-name", "shop", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    pids = _ready(server.address, 2)
    for _ in range(5):
        assert requests.get(nginx.url + "/", timeout=10).text == "hello"

    ping = requests.get(nginx.url + "/fcgi-ping", timeout=10)
    assert ping.status_code == 200 and ping.text == "pong\n"

    text = requests.get(nginx.url + "/fcgi-status", timeout=10)
    assert text.headers["Content-Type"].startswith("text/plain")
    for label in ("pool:", "start time:", "accepted requests:", "listen queue:", "active threads:",
                  "idle threads:", "max active threads:", "slow requests:", "request uri:"):
        assert label in text.text
    assert "pool:                shop" in text.text
    assert all("pid:                 %d" % pid in text.text for pid in pids)

    def json_view_with_the_five_requests():
        # Another worker's figures may be up to 50 ms old (docs/observability.md)
        data = requests.get(nginx.url + "/fcgi-status?json", timeout=10).json()
        return data if data["accepted_requests"] >= 5 else None
    data = wait_for(json_view_with_the_five_requests, 5, what="the five requests in the pool's count")
    assert data["pool"] == "shop" and data["workers"] == 2
    assert data["total_threads"] == 16 and data["active_threads"] >= 1
    assert data["listen_queue_len"] == 1024 and data["listen_queue"] == 0
    busy = [w for w in data["worker_list"] if w["state"] == "busy"]
    assert busy and busy[0]["request_uri"] == "/fcgi-status"  # the status request itself, no query string
    assert {w["pid"] for w in data["worker_list"]} == pids

    metrics = requests.get(nginx.url + "/fcgi-status?openmetrics", timeout=10)
    assert metrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert metrics.text.endswith("# EOF\n")
    assert 'wsgi_fcgi_workers{pool="shop"} 2' in metrics.text
    assert "# TYPE wsgi_fcgi_accepted_requests counter" in metrics.text
    assert "wsgi_fcgi_accepted_requests_total{" in metrics.text
    samples = [line for line in metrics.text.splitlines() if line and not line.startswith("#")]
    assert all(line.rsplit(" ", 1)[1].replace(".", "", 1).isdigit() for line in samples)


def test_slow_request_stack_is_logged_once(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", "--slow-request-timeout", "1", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    r = requests.get(nginx.url + "/sleep?s=3", timeout=20)
    assert r.status_code == 200 and r.text == "slept"
    log = server.log()
    assert log.count("slow request: GET /sleep?s=3") == 1
    assert "in sleeping_function" in log
    assert _status(server.address)["slow_requests"] == 1


def test_a_request_just_past_the_slow_timeout_is_logged_wherever_it_starts(start_wsgi_fcgi):
    # 0.55 s against a 0.3 s slowlog: a look must fall in the 0.25 s between.
    # Looked at once a second, a request was logged one time in four.
    from wsgi_fcgi import client
    server = start_wsgi_fcgi("masterapp:app", "--slow-request-timeout", "0.3", *STATUS)
    for _ in range(6):
        time.sleep(random.uniform(0, 0.3))  # requests start at any point between two looks
        assert client.request(server.address, "GET", "/sleep?s=0.55", timeout=10).body == b"slept"
    assert server.log().count("slow request: GET /sleep?s=0.55") == 6
    assert _status(server.address)["slow_requests"] == 6


def test_request_timeout_interrupts_python_code_and_the_worker_lives_on(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", "--request-timeout", "1.5", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    (pid,) = _ready(server.address, 1)
    started = time.monotonic()
    r = requests.get(nginx.url + "/spin?s=30", timeout=30)
    assert r.status_code == 504
    assert time.monotonic() - started < 8
    log = server.log()
    assert "request timeout: GET /spin?s=30" in log and "in spinning_function" in log
    wait_for(lambda: _status(server.address)["active_threads"] == 1, 10, what="the spinning thread freed")
    assert requests.get(nginx.url + "/pid", timeout=10).text == str(pid)
    assert _pids(server.address) == {pid}
    assert _status(server.address)["timed_out_requests"] == 1


def test_request_timeout_stuck_in_c_replaces_the_worker(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", "--request-timeout", "1", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    (pid,) = _ready(server.address, 1)
    started = time.monotonic()
    r = requests.get(nginx.url + "/sleep?s=60", timeout=30)  # time.sleep does not see the interrupt
    assert r.status_code == 504
    assert time.monotonic() - started < 8
    wait_for(lambda: (lambda now: len(now) == 1 and pid not in now)(_pids(server.address)), 20, interval=0.2,
             what="a replacement worker")
    assert "stuck outside Python code" in server.log()
    assert requests.get(nginx.url + "/", timeout=10).text == "hello"


def test_status_requests_never_reach_the_app(start_wsgi_fcgi):
    from wsgi_fcgi import client
    server = start_wsgi_fcgi("envapp:app", "--no-master", *STATUS)
    with client.connect(server.address):  # one connection more for the page to count (--no-master too)
        data = json.loads(client.request(server.address, "GET", "/fcgi-status?json").body)
    assert "environ" not in data and data["workers"] == 1 and data["connections"] == 2
    assert client.request(server.address, "GET", "/fcgi-ping").body == b"pong\n"
