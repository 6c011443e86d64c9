"""--pm ondemand: no worker at rest; the master watches the listening
sockets and starts workers as connections wait, and stops workers idle for
--worker-idle-timeout.  Real nginx in front (the shipped config, kept-alive
connections) with keep-alive POSTs that must all succeed throughout."""

import os
import socket
import time

import requests
from support import FastCGILoad, PostLoop, children_of, pool_status, wait_children, wait_for

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p

POOL = ("--pm", "ondemand", "--workers", "4", "--worker-idle-timeout", "1", "--threads", "2",
        "--status-path", "/status")


def test_ondemand_pool_starts_from_zero_grows_and_goes_back_to_zero(start_site):
    url, server = start_site("wsgi-fcgi-tcp.conf", "masterapp:app", *POOL)
    wait_children(server.pid, 0, timeout=15)  # the boot worker (it checked the app loads) idled out
    started = time.monotonic()
    first = requests.post(url + "/pid", data=b"first", timeout=20)
    cold = time.monotonic() - started
    assert first.status_code == 200 and int(first.text) in children_of(server.pid)
    warms = []
    for _ in range(3):
        started = time.monotonic()
        assert requests.post(url + "/pid", data=b"next", timeout=20).status_code == 200
        warms.append(time.monotonic() - started)
    warm = min(warms)
    assert cold > warm  # the first one waited for a fork and the app's import
    print("first request after idle: %.0f ms, next: %.1f ms" % (cold * 1000, warm * 1000))

    posts = PostLoop(url + "/pid")
    load = FastCGILoad(server.address, 8)  # 8 requests of 0.5 s at once: more than 4 workers x 2 threads
    try:
        wait_for(lambda: len(children_of(server.pid)) == 4, 20, interval=0.1, what="four workers under load")
        status = pool_status(server.address)
        assert status["process_manager"] == "ondemand" and status["max_workers"] == 4
        wait_for(lambda: pool_status(server.address)["max_workers_reached"] >= 1, 10, interval=0.2,
                 what="max workers reached")
        assert len(children_of(server.pid)) == 4  # never more than --workers
    finally:
        load.stop()
    wait_for(lambda: len(children_of(server.pid)) <= 2, 20, interval=0.1,
             what="idle workers stopped")  # the POSTs keep one or two busy
    posts.stop()
    wait_children(server.pid, 0, timeout=15)
    assert not load.failures, load.failures[:5]
    assert not posts.failures, posts.failures[:5]
    assert posts.ok > 20 and load.ok >= 8  # every load client got answers (the pool may grow fast)
    assert "(--worker-idle-timeout): stopping it" in server.log()


def test_a_kept_connection_outlives_the_last_worker(start_site):
    # The last worker stops (idle), nginx keeps its connection: the next POST
    # goes out on it and must start a worker, not wait for nginx's timeout.
    url, server = start_site("wsgi-fcgi-tcp.conf", "masterapp:app", *POOL)
    wait_children(server.pid, 0, timeout=15)
    for round_ in range(2):
        assert requests.post(url + "/pid", data=b"before", timeout=20).status_code == 200
        wait_children(server.pid, 0, timeout=15)  # idled out, its connection parked in the master
        started = time.monotonic()
        after = requests.post(url + "/pid", data=b"after", timeout=20)
        assert after.status_code == 200 and int(after.text) in children_of(server.pid)
        assert time.monotonic() - started < 5, round_
    assert "Traceback" not in server.log()


def cpu_seconds(pid: int) -> float:
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_request_on_a_kept_connection_waits_for_a_worker_without_a_busy_master(start_wsgi_fcgi, tmp_path):
    # Workers that cannot start (the app broke): the master backs off, and
    # the request waiting on the connection it holds must not make it spin.
    marker = tmp_path / "broken"
    server = start_wsgi_fcgi("masterapp:app", *POOL, env={"MASTERAPP_FAIL_IF": str(marker)})
    conn = socket.create_connection(server.address.rsplit(":", 1), timeout=30)
    request = client.encode_request(1, client.cgi_params("GET", "/"), keep_conn=True)
    conn.sendall(request)
    assert client.read_response(conn, 1, p.RecordParser()).status == 200
    wait_children(server.pid, 0, timeout=15)
    marker.touch()
    conn.sendall(request)
    wait_for(lambda: "failing at import on purpose" in server.log(), 15, what="a worker failing to start")
    before = cpu_seconds(server.pid)
    time.sleep(2)
    assert cpu_seconds(server.pid) - before < 0.5  # not a core spinning on the waiting request
    marker.unlink()
    response = client.read_response(conn, 1, p.RecordParser())  # the next worker starts and answers
    assert response.status == 200
    conn.close()


def test_ondemand_with_a_broken_app_fails_at_start(start_wsgi_fcgi):
    server = start_wsgi_fcgi("no_such_module_here:app", "--pm", "ondemand", wait=False)
    assert server.wait(20) == 1
    errors = [line for line in server.log().splitlines() if line.startswith("wsgi-fcgi: error:")]
    assert len(errors) == 1 and "no_such_module_here" in errors[0]
