"""Signals to the master, with real nginx in front: HUP reload, TERM drain,
INT quick stop, TTIN/TTOU, USR1 log reopening, the pid file."""

import signal
import threading
import time

import requests
from support import RequestLoop, children_of, fastcgi_location, pool_status, wait_for, worker_pids

STATUS = ("--status-path", "/status")


def _ready(address, count):
    return wait_for(lambda: len(worker_pids(address)) == count and worker_pids(address),
                    20, interval=0.2, what="%d ready workers" % count)


def test_hup_reloads_without_a_failed_request(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", "--workers", "2", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    old = _ready(server.address, 2)
    loop = RequestLoop(nginx.url + "/pid")
    time.sleep(1.5)
    server.send_signal(signal.SIGHUP)
    new = wait_for(lambda: (worker_pids(server.address) if not worker_pids(server.address) & old
                            and len(worker_pids(server.address)) == 2 else None),
                   20, interval=0.2, what="two new workers after HUP")
    time.sleep(1.5)
    loop.stop()
    assert not loop.failures, loop.failures[:5]
    assert loop.ok > 20
    served_by = {int(pid) for pid in loop.pids}
    assert served_by & old and served_by & new  # both generations served during the loop
    assert "reloading" in server.log() or "SIGHUP" in server.log()


def test_term_lets_a_running_request_finish(start_wsgi_fcgi, start_nginx, tmp_path):
    pid_file = tmp_path / "master.pid"
    server = start_wsgi_fcgi("masterapp:app", "--pid", str(pid_file), *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    _ready(server.address, 1)
    assert int(pid_file.read_text()) == server.pid
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=requests.get(nginx.url + "/sleep?s=2", timeout=20)))
    thread.start()
    wait_for(lambda: pool_status(server.address)["active_threads"] >= 2, 10, what="the sleep request running")
    server.send_signal(signal.SIGTERM)
    assert server.wait(20) == 0
    thread.join(20)
    assert result["r"].status_code == 200 and result["r"].text == "slept"
    assert not pid_file.exists()


def test_int_stops_at_once(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", *STATUS)
    _ready(server.address, 1)
    nginx = start_nginx(fastcgi_location(server.address))
    threading.Thread(target=_ignore, args=(requests.get, nginx.url + "/sleep?s=20"), daemon=True).start()
    wait_for(lambda: pool_status(server.address)["active_threads"] >= 2, 10, what="the sleep request running")
    started = time.monotonic()
    server.send_signal(signal.SIGINT)
    server.wait(10)
    assert time.monotonic() - started < 5


def _ignore(fn, *args):
    try:
        fn(*args, timeout=30)
    except requests.RequestException:
        pass


def test_ttin_and_ttou_change_the_worker_count(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("masterapp:app", *STATUS)
    nginx = start_nginx(fastcgi_location(server.address))
    _ready(server.address, 1)
    server.send_signal(signal.SIGTTIN)
    time.sleep(0.3)
    server.send_signal(signal.SIGTTIN)
    wait_for(lambda: requests.get(nginx.url + "/status?json", timeout=10).json()["workers"] == 3, 20,
             interval=0.2, what="3 workers on the status page")
    three = _ready(server.address, 3)
    server.send_signal(signal.SIGTTOU)
    wait_for(lambda: requests.get(nginx.url + "/status?json", timeout=10).json()["workers"] == 2, 20,
             interval=0.2, what="2 workers on the status page")
    assert worker_pids(server.address) < three


def test_hups_faster_than_the_app_loads_do_not_pile_up_workers(start_wsgi_fcgi, start_nginx):
    """Each HUP stops the workers still loading the app (they served nothing)
    and starts the new ones: a HUP every 0.3 s with an app that takes 1.5 s
    to load had started a generation of workers at each, none ready before
    the next.  The old workers serve until the last generation is ready."""
    server = start_wsgi_fcgi("masterapp:app", "--workers", "2", *STATUS, env={"MASTERAPP_IMPORT_SECONDS": "1.5"})
    nginx = start_nginx(fastcgi_location(server.address))
    serving = _ready(server.address, 2)
    loop = RequestLoop(nginx.url + "/pid")
    most = 0
    for _ in range(8):
        server.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        most = max(most, len(children_of(server.pid)))
    new = wait_for(lambda: (worker_pids(server.address) if not worker_pids(server.address) & serving
                            and len(worker_pids(server.address)) == 2 else None),
                   30, interval=0.2, what="the last HUP's two workers")
    time.sleep(0.5)
    loop.stop()
    assert most <= 6, most  # the two serving, two starting, two stopping at most
    assert not loop.failures, loop.failures[:5]
    assert {int(pid) for pid in loop.pids} <= serving | new  # no worker of the HUPs in between served
    assert server.log().count("still loading the app: these replace them") >= 6
    wait_for(lambda: len(children_of(server.pid)) == 2, 20, interval=0.1, what="only the two new workers left")


def test_usr1_reopens_the_access_log(start_wsgi_fcgi, tmp_path):
    from wsgi_fcgi import client
    access = tmp_path / "access.log"
    server = start_wsgi_fcgi("masterapp:app", "--access-log", str(access), *STATUS,
                             "--access-log-format", "{method} {uri} {status} {bytes} pid={pid}")
    _ready(server.address, 1)
    assert client.request(server.address, "GET", "/hello?x=1").status == 200
    wait_for(lambda: "GET /hello?x=1 200" in access.read_text(), 5, what="the access log line")
    rotated = tmp_path / "access.log.1"
    access.rename(rotated)
    server.send_signal(signal.SIGUSR1)
    time.sleep(1.5)  # the worker reopens on its next tick
    assert client.request(server.address, "GET", "/after-rotate").status == 200
    wait_for(lambda: access.exists() and "GET /after-rotate 200" in access.read_text(), 5,
             what="a line in the reopened access log")
    assert "after-rotate" not in rotated.read_text()


def test_hup_with_a_broken_app_keeps_the_old_workers(start_wsgi_fcgi, tmp_path):
    from wsgi_fcgi import client
    module = tmp_path / "reloadable_app.py"
    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                      "    return [b'version 1']\n")
    server = start_wsgi_fcgi("reloadable_app:app", "--workers", "2", *STATUS, cwd=tmp_path)
    old = _ready(server.address, 2)
    module.write_text("this is not python (\n")
    server.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log(), 20, interval=0.2, what="the failed reload")
    time.sleep(1.0)
    assert worker_pids(server.address) == old
    assert client.request(server.address, "GET", "/").body == b"version 1"

    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                      "    return [b'version 2']\n")
    server.send_signal(signal.SIGHUP)
    wait_for(lambda: client.request(server.address, "GET", "/").body == b"version 2"
             and not worker_pids(server.address) & old, 20, interval=0.2, what="version 2 after HUP")
