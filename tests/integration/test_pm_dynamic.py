"""--pm dynamic: spare workers between --min-spare-workers and
--max-spare-workers, never more than --workers; real processes, real nginx
(the shipped config: kept-alive connections) and keep-alive POSTs that must
all succeed while the pool grows and shrinks."""

import time

import pytest
from support import FastCGILoad, PostLoop, children_of, pool_status, wait_children, wait_for

from wsgi_fcgi import client

POOL = ("--pm", "dynamic", "--workers", "5", "--start-workers", "1", "--min-spare-workers", "1",
        "--max-spare-workers", "2", "--threads", "2", "--status-path", "/status")


def test_dynamic_pool_grows_under_load_and_shrinks_after(start_site):
    url, server = start_site("wsgi-fcgi-tcp.conf", "masterapp:app", *POOL)
    time.sleep(1.5)  # at rest: --start-workers 1 (the min spare one is there already)
    assert len(children_of(server.pid)) == 1
    posts = PostLoop(url + "/pid")
    load = FastCGILoad(server.address, 8)  # 8 requests of 0.5 s at once need 4 workers of 2 threads
    try:
        peak = wait_for(lambda: (lambda n: n >= 4 and n)(len(children_of(server.pid))), 20, interval=0.1,
                        what="the pool growing under load")
        time.sleep(2)
        assert len(children_of(server.pid)) <= 5  # never more than --workers
        status = pool_status(server.address)
        assert status["process_manager"] == "dynamic" and status["max_workers"] == 5
        assert status["active_workers"] >= 3
    finally:
        load.stop()
    wait_children(server.pid, 2)  # back to --max-spare-workers idle ones, one stopped per second
    posts.stop()
    assert not load.failures, load.failures[:5]
    assert not posts.failures, posts.failures[:5]
    assert posts.ok > 20 and load.ok > 20 and peak >= 4
    assert "idle workers, more than --max-spare-workers" in server.log()


def test_the_pool_counts_reaching_its_maximum(start_site):
    url, server = start_site("wsgi-fcgi-tcp.conf", "masterapp:app", "--pm", "dynamic", "--workers", "2",
                             "--min-spare-workers", "1", "--max-spare-workers", "1", "--threads", "2",
                             "--status-path", "/status")
    assert pool_status(server.address)["max_workers_reached"] == 0
    load = FastCGILoad(server.address, 6)
    try:
        wait_for(lambda: "reached --workers 2" in server.log(), 20, interval=0.2, what="the max workers warning")
        assert len(children_of(server.pid)) == 2
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    status = pool_status(server.address)
    assert status["max_workers_reached"] >= 1
    openmetrics = client.request(server.address, "GET", "/status?openmetrics").body
    assert b'wsgi_fcgi_max_workers_reached_total{pool="masterapp:app"} ' in openmetrics
    assert b'wsgi_fcgi_process_manager{pool="masterapp:app",mode="dynamic"} 1' in openmetrics


@pytest.mark.parametrize("args, error", [
    (("--pm", "dynamic", "--workers", "2", "--min-spare-workers", "1", "--max-spare-workers", "3"),
     "--pm dynamic needs 1 <= --min-spare-workers (1) <= --max-spare-workers (3) <= --workers (2)"),
    (("--pm", "dynamic", "--workers", "4", "--min-spare-workers", "0", "--max-spare-workers", "2"),
     "--pm dynamic needs 1 <= --min-spare-workers (0) <= --max-spare-workers (2) <= --workers (4)"),
    (("--pm", "dynamic", "--workers", "4", "--start-workers", "5"),
     "--pm dynamic needs --min-spare-workers (1) <= --start-workers (5) <= --workers (4)"),
    (("--pm", "ondemand", "--worker-idle-timeout", "0"), "--pm ondemand needs --worker-idle-timeout above 0"),
])
def test_pool_settings_that_do_not_fit_are_one_line_at_start_up(start_wsgi_fcgi, args, error):
    server = start_wsgi_fcgi("masterapp:app", *args, wait=False)
    assert server.wait(20) == 1
    errors = [line for line in server.log().splitlines() if line.startswith("wsgi-fcgi: error:")]
    assert errors == ["wsgi-fcgi: error: " + error]
    assert "Traceback" not in server.log()
