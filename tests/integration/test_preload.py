"""--preload: the app is imported once, in the master, before forking.  HUP
then starts new workers from that same imported app (no new code: the
master never imports again); USR2 (a new master) loads the new code."""

import json
import os
import signal

from support import children_of, process_gone, read_pid, wait_children, wait_for

from wsgi_fcgi import client

APP = """import os
VERSION = %r
IMPORTED_BY = os.getpid()


def app(environ, start_response):
    body = ("%%s %%d %%d" %% (VERSION, IMPORTED_BY, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def _answer(address):
    version, imported_by, pid = client.request(address, "GET", "/").body.decode().split()
    return version, int(imported_by), int(pid)


def _start(start_wsgi_fcgi, tmp_path, *args):
    (tmp_path / "versionapp.py").write_text(APP % "v1")
    return start_wsgi_fcgi("versionapp:app", "--workers", "2", *args, cwd=tmp_path,
                           env={"PYTHONDONTWRITEBYTECODE": "1"})


def _new_workers(server, old):
    return wait_for(lambda: (lambda now: len(now) == 2 and not now & old and now)(children_of(server.pid)), 20,
                    interval=0.1, what="two new workers")


def test_the_loaded_app_is_frozen_out_of_the_collectors_generations(start_wsgi_fcgi):
    """gc.freeze() once the app is loaded, with and without --preload: full
    collections stop walking the app's modules, forked workers stop copying
    the pages they share with the master."""
    for args in ((), ("--preload",)):
        server = start_wsgi_fcgi("envapp:app", "--workers", "1", *args)
        frozen = json.loads(client.request(server.address, "GET", "/").body)["gc_frozen"]
        assert frozen > 1000, (args, frozen)
        server.stop()


def _churn_faults(server):
    return json.loads(client.request(server.address, "GET", "/malloc/churn").body)["faults"]


def test_a_worker_keeps_the_memory_its_requests_reuse_unless_the_environment_tunes_malloc(start_wsgi_fcgi):
    """glibc's default would give a thread arena's free top back past 128 KiB:
    each round of the app's 64 KiB blocks would fault about 80 pages in again
    (24,000 over the 300 rounds).  A worker fixes the thresholds; an
    operator's MALLOC_* environment is left to glibc."""
    kept = start_wsgi_fcgi("envapp:app", "--workers", "1", "--threads", "2")
    assert _churn_faults(kept) < 1000
    for tuning in ({"MALLOC_TRIM_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}):
        tuned = start_wsgi_fcgi("envapp:app", "--workers", "1", "--threads", "2", env=tuning)
        assert _churn_faults(tuned) > 5000, tuning


def test_preload_imports_once_in_the_master_and_hup_keeps_that_code(start_wsgi_fcgi, tmp_path):
    pid_file = tmp_path / "master.pid"
    server = _start(start_wsgi_fcgi, tmp_path, "--preload", "--pid", str(pid_file))
    first = wait_children(server.pid, 2)
    version, imported_by, pid = _answer(server.address)
    assert (version, imported_by) == ("v1", server.pid) and pid in first
    (tmp_path / "versionapp.py").write_text(APP % "v2")
    server.send_signal(signal.SIGHUP)
    second = _new_workers(server, first)
    version, imported_by, pid = _answer(server.address)
    assert (version, imported_by) == ("v1", server.pid) and pid in second  # re-forked, not re-imported
    assert "--preload: the new workers run the app imported at start" in server.log()

    server.send_signal(signal.SIGUSR2)  # what loads new code with --preload
    new_master = wait_for(lambda: (lambda pid: pid != server.pid and pid)(read_pid(pid_file)), 30, interval=0.05,
                          what="the new master")
    try:
        assert server.wait(30) == 0
        wait_children(new_master, 2)
        version, imported_by, pid = _answer(server.address)
        assert (version, imported_by) == ("v2", new_master) and pid in children_of(new_master)
    finally:
        os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: process_gone(new_master), 20, interval=0.1, what="the new master stopped")


def test_without_preload_each_worker_imports_and_hup_loads_new_code(start_wsgi_fcgi, tmp_path):
    server = _start(start_wsgi_fcgi, tmp_path)
    first = wait_children(server.pid, 2)
    version, imported_by, pid = _answer(server.address)
    assert version == "v1" and imported_by == pid and pid in first
    (tmp_path / "versionapp.py").write_text(APP % "v2")
    server.send_signal(signal.SIGHUP)
    _new_workers(server, first)
    version, imported_by, pid = _answer(server.address)
    assert version == "v2" and imported_by == pid


def test_preload_with_an_app_that_cannot_load_is_one_line(start_wsgi_fcgi):
    server = start_wsgi_fcgi("no_such_module_here:app", "--preload", wait=False)
    assert server.wait(20) == 1
    errors = [line for line in server.log().splitlines() if line.startswith("wsgi-fcgi: error:")]
    assert len(errors) == 1 and "no_such_module_here" in errors[0]
    assert "Traceback" not in server.log()
