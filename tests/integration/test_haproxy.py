"""HAProxy's fcgi-app in front of wsgi_fcgi (frontends/haproxy/haproxy.cfg):
FCGI_GET_VALUES, requests multiplexed on shared connections (the only common
front end that does it), and HAProxy's FastCGI health check."""

import concurrent.futures
import hashlib
import socket
import subprocess
import time

import pytest
import requests
from support import WsgiFcgi, assert_head_then_get, free_port, wait_for

from frontends import Haproxy, shipped

SHIPPED_BIND = "127.0.0.1:8080"


def start_haproxy(tmp, backend, **replace):
    port = free_port()
    stats = tmp / "stats.sock"
    conf = shipped("haproxy/haproxy.cfg", backend.address, **{
        SHIPPED_BIND: "127.0.0.1:%d" % port,
        "global\n": "global\n    stats socket %s mode 600 level admin\n    log stdout format raw local0 info\n" % stats,
        "defaults\n": "defaults\n    log global\n    option httplog\n"}, **replace)
    proxy = Haproxy(tmp, conf, port)
    proxy.stats_socket = stats
    return proxy


def server_check(proxy):
    """(status, check status, check code) of the backend server, from the stats socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(proxy.stats_socket))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") == "app1":
            return row["status"], row["check_status"], row["check_code"]
    raise AssertionError("no app1 in HAProxy's stats:\n" + data.decode())


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    server = WsgiFcgi("envapp:app", tmp_path_factory.mktemp("haproxy-envapp"), "--threads", "64")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def haproxy(backend, tmp_path_factory):
    proxy = start_haproxy(tmp_path_factory.mktemp("haproxy"), backend,
                          **{"check inter 2s": "check inter 300ms"})
    yield proxy
    proxy.stop()


def backend_connections(backend):
    """Established TCP connections to the backend's port (from HAProxy)."""
    out = subprocess.run(["ss", "-tnH", "state", "established", "dst", backend.address],
                         capture_output=True, text=True, timeout=10).stdout
    return len(out.splitlines())


def test_environ_through_haproxy(haproxy):
    env = requests.get(haproxy.url + "/caf%C3%A9/x?q=1", timeout=10).json()["environ"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/café/x".encode().decode("latin-1"))
    assert env["QUERY_STRING"] == "q=1"
    assert env["REQUEST_URI"] == "/caf%C3%A9/x?q=1"


def haproxys_own_500(response):
    """HAProxy's error page (text/html), not the app's or wsgi_fcgi's (text/plain)."""
    return response.status_code == 500 and response.headers.get("Content-Type") == "text/html"


def test_many_concurrent_requests_multiplexed_and_correct(haproxy, backend):
    """Slow requests at once: HAProxy puts several on one connection (it got
    FCGI_MPXS_CONNS=1 from FCGI_GET_VALUES), and each gets its own answer.

    HAProxy 2.6 itself sometimes fails a multiplexed stream before sending
    its params (FCGI_BEGIN_REQUEST then FCGI_ABORT_REQUEST; a 500 logged with
    termination state "IH", its own internal error): those are counted apart.
    """
    sleepers, uploads = 40, 10
    for _ in range(3):  # open connections that know FCGI_MPXS_CONNS, as in steady use
        assert requests.get(haproxy.url + "/warm-up", timeout=10).status_code == 200

    def sleeper(i):
        r = requests.get(haproxy.url + "/sleep?s=1.5&i=%d" % i, timeout=30)
        if haproxys_own_500(r):
            return "haproxy-500"
        assert (r.status_code, r.text) == (200, "slept")
        return "ok"

    def upload(i):
        body = (b"%d-" % i) * (5000 * i)
        r = requests.post(haproxy.url + "/upload?i=%d" % i, data=body, timeout=30)
        if haproxys_own_500(r):
            return "haproxy-500"
        assert r.status_code == 200, (r.status_code, r.text[:200])
        assert r.json()["environ"]["QUERY_STRING"] == "i=%d" % i
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        return "ok"

    with concurrent.futures.ThreadPoolExecutor(sleepers + uploads) as pool:
        futures = [pool.submit(sleeper, i) for i in range(sleepers)]
        time.sleep(0.5)
        connections = backend_connections(backend)
        futures += [pool.submit(upload, i) for i in range(uploads)]
        results = [f.result(timeout=60) for f in futures]
    haproxy_failures = results.count("haproxy-500")
    assert results.count("ok") + haproxy_failures == sleepers + uploads
    assert haproxy_failures <= (sleepers + uploads) // 10
    assert haproxy.log().count(" 500 ") == haproxy.log().count(" IH-- ") == haproxy_failures
    assert 1 <= connections < sleepers, "%d connections for %d sleeping requests" % (connections, sleepers)


def test_health_check_sees_the_app(haproxy):
    wait_for(lambda: server_check(haproxy)[1] == "L7OK", 10, what="HAProxy check L7OK")
    assert server_check(haproxy) == ("UP", "L7OK", "200")


def test_failing_health_check_takes_the_server_out(backend, tmp_path):
    proxy = start_haproxy(tmp_path, backend, **{"uri /health": "uri /status/503",
                                                 "check inter 2s": "check inter 200ms fall 2"})
    try:
        wait_for(lambda: server_check(proxy)[0] == "DOWN", 15, what="server DOWN")
        assert server_check(proxy)[1:] == ("L7STS", "503")
        assert requests.get(proxy.url + "/", timeout=10).status_code == 503
    finally:
        proxy.stop()


def test_head_then_get_on_one_connection(haproxy):
    assert_head_then_get(haproxy.url + "/x?q=1")
