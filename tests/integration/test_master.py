"""The master over worker processes: real processes, real nginx in front."""

import os
import signal
import time

import requests
from support import RequestLoop, fastcgi_location, pool_status, wait_for, worker_pids

STATUS = ("--status-path", "/status")


def _ready(address, count):
    return wait_for(lambda: len(worker_pids(address)) == count and worker_pids(address),
                    20, interval=0.2, what="%d ready workers" % count)


def _parent_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rpartition(")")[2].split()[1])


def test_three_workers_and_a_dying_one_is_replaced(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("envapp:app", "--workers", "3", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    pids = _ready(server.address, 3)
    assert all(_parent_of(pid) == server.pid for pid in pids)
    body = requests.get(nginx.url + "/", timeout=10).json()
    assert body["multiprocess"] is True and body["pid"] in pids

    assert requests.get(nginx.url + "/exit", timeout=10).status_code == 502  # os._exit(1) in the request
    for _ in range(20):
        assert requests.get(nginx.url + "/", timeout=10).status_code == 200
    after = wait_for(lambda: (lambda now: len(now) == 3 and len(now - pids) == 1 and now)(worker_pids(server.address)),
                     20, interval=0.2, what="a replacement worker")
    dead = (pids - after).pop()
    assert not os.path.exists("/proc/%d" % dead) or _parent_of(dead) != server.pid
    assert "died unexpectedly" in server.log()


def test_max_requests_recycles_workers_without_a_failed_request(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", "--workers", "2", "--max-requests", "50",
                             "--max-requests-jitter", "10", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    first = _ready(server.address, 2)
    loop = RequestLoop(nginx.url + "/pid", max_seconds=20)
    wait_for(lambda: loop.ok >= 250 or loop.failures, 20, interval=0.1, what="250 requests")
    loop.stop()
    assert not loop.failures, loop.failures[:5]
    served_by = {int(pid) for pid in loop.pids}
    assert len(served_by) >= 4  # at least one recycling per worker slot
    now = _ready(server.address, 2)
    assert not now & first
    assert "--max-requests" in server.log()


def test_a_silent_worker_is_killed_and_replaced(start_wsgi_fcgi):
    server = start_wsgi_fcgi("masterapp:app", "--timeout", "2", *STATUS)
    (stuck,) = _ready(server.address, 1)
    os.kill(stuck, signal.SIGSTOP)
    try:
        wait_for(lambda: "sent no heartbeat" in server.log(), 15, interval=0.2, what="the heartbeat timeout")
        replacement = _ready(server.address, 1)
        assert stuck not in replacement
    finally:
        try:
            os.kill(stuck, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_worker_slow_to_load_its_app_is_not_taken_for_silent(start_wsgi_fcgi):
    # Its heartbeat dates from its readiness, not from its fork: an import
    # of most of --timeout put its first tick (a second after) past it.
    server = start_wsgi_fcgi("masterapp:app", "--timeout", "2", *STATUS, env={"MASTERAPP_IMPORT_SECONDS": "1.5"})
    (worker,) = _ready(server.address, 1)
    time.sleep(2)
    assert worker_pids(server.address, "/status") == {worker}
    assert "sent no heartbeat" not in server.log()


def test_a_stall_of_the_whole_host_kills_no_worker(start_wsgi_fcgi):
    # Master and worker stopped together past --timeout (a throttled cgroup,
    # a suspended VM); the master resumes first and must not take the
    # worker's silence for a stuck loop.
    server = start_wsgi_fcgi("masterapp:app", "--timeout", "2", *STATUS)
    (worker,) = _ready(server.address, 1)
    os.kill(server.pid, signal.SIGSTOP)
    os.kill(worker, signal.SIGSTOP)
    try:
        time.sleep(3)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        time.sleep(0.5)
        try:
            os.kill(worker, signal.SIGCONT)
        except ProcessLookupError:
            pass  # killed as stuck: the assertions below say so
    time.sleep(1.5)
    assert worker_pids(server.address, "/status") == {worker}
    log = server.log()
    assert "sent no heartbeat" not in log and "master: did not run for 3." in log


def test_an_app_that_cannot_load_stops_the_master_with_one_line(start_wsgi_fcgi):
    server = start_wsgi_fcgi("no_such_module_here:app", "--workers", "3", wait=False)
    assert server.wait(20) == 1
    errors = [line for line in server.log().splitlines() if line.startswith("wsgi-fcgi: error:")]
    assert len(errors) == 1 and "no_such_module_here" in errors[0]
    assert "Traceback" not in server.log()


def test_a_crash_loop_backs_off(start_wsgi_fcgi, tmp_path):
    server = start_wsgi_fcgi("masterapp:app", "--restart-threshold", "3", "--restart-window", "30", *STATUS)
    from wsgi_fcgi import client
    for _ in range(3):
        (pid,) = _ready(server.address, 1)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: pid not in worker_pids(server.address), 10, interval=0.1, what="the worker gone")
    wait_for(lambda: "crash loop guard" in server.log(), 10, interval=0.2, what="the crash loop warning")
    (pid,) = _ready(server.address, 1)  # after the back-off, a worker again
    assert client.request(server.address, "GET", "/pid").body == str(pid).encode()


def test_no_master_serves_in_one_process(start_wsgi_fcgi):
    server = start_wsgi_fcgi("masterapp:app", "--no-master", *STATUS)
    status = pool_status(server.address)
    assert [w["pid"] for w in status["worker_list"]] == [server.pid]
    server.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0


def test_finish_request_ends_the_response_while_the_app_goes_on(start_wsgi_fcgi, start_nginx, tmp_path):
    done = tmp_path / "done"
    server = start_wsgi_fcgi("masterapp:app")
    nginx = start_nginx(fastcgi_location(server.address))
    started = time.monotonic()
    r = requests.get(nginx.url + "/finish", params={"s": "2", "file": str(done)}, timeout=20)
    assert r.status_code == 200 and r.text == "finished early"
    assert time.monotonic() - started < 1.8
    assert not done.exists()
    wait_for(done.exists, 10, what="the slow work after finish_request")
    assert done.read_text() == "slow work done"


def test_a_bad_access_log_format_is_one_line_at_start_up(start_wsgi_fcgi, tmp_path):
    server = start_wsgi_fcgi("masterapp:app", "--access-log", str(tmp_path / "a.log"),
                             "--access-log-format", "{method} {no_such_atom}", wait=False)
    assert server.wait(20) == 1
    assert server.log().strip() == ("wsgi-fcgi: error: --access-log-format: unknown atom {no_such_atom} "
                                    "(see the README for the list)")


def test_a_busy_worker_leaves_new_connections_to_idle_ones(start_wsgi_fcgi):
    # Every thread of a worker busy: it stops accepting until one is free, so
    # a new connection goes to an idle worker instead of waiting behind it.
    import threading

    from wsgi_fcgi import client
    server = start_wsgi_fcgi("masterapp:app", "--workers", "2", "--threads", "1", "--status-path", "/status")
    wait_for(lambda: len(worker_pids(server.address)) == 2, 20, what="two workers")
    for _ in range(5):
        slow = threading.Thread(target=client.request, args=(server.address, "GET", "/sleep?s=1.5"),
                                kwargs={"timeout": 10})
        slow.start()
        time.sleep(0.4)  # the slow request holds its worker's only thread now
        started = time.monotonic()
        assert client.request(server.address, "GET", "/pid", timeout=10).status == 200
        assert time.monotonic() - started < 1.0, "a new connection waited behind a busy worker"
        slow.join(10)
