"""The gunicorn worker class (issue 4): real gunicorn masters, real nginx in front."""

import collections
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from support import (
    APPS,
    PYTHON,
    ROOT,
    FcgiConnection,
    Process,
    RequestLoop,
    can_connect,
    fastcgi_location,
    free_port,
    pid_of,
    project_env,
    wait_for,
)

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p
from wsgi_fcgi.client import request

gunicorn = pytest.importorskip("gunicorn")

GUNICORN = [PYTHON, "-m", "gunicorn"]
WORKER = "wsgi_fcgi.gunicorn_worker.FastCGIWorker"


def _control_socket_args():
    """gunicorn >= 24 opens a control socket in ~/.gunicorn: tests run in parallel."""
    from gunicorn.config import KNOWN_SETTINGS
    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


class Gunicorn(Process):
    """`gunicorn -k FastCGIWorker ... envapp:app`, bound to `address` (a free port by default)."""

    def __init__(self, tmp: Path, *args: str, address=None, app: str = "envapp:app", workers: int = 2,
                 bind=None, pass_fds=()) -> None:
        self.address = address or "127.0.0.1:%d" % free_port()
        Path(tmp).mkdir(parents=True, exist_ok=True)
        cmd = [*GUNICORN, "-k", WORKER, "-w", str(workers), "-b", bind or self.address, "--timeout", "20",
               "--graceful-timeout", "10", *_control_socket_args(), *args, app]
        super().__init__(cmd, Path(tmp) / "gunicorn.log", cwd=APPS, env=project_env(), pass_fds=pass_fds)
        self.await_start(lambda: self._wait_ready(workers))

    def _wait_ready(self, workers: int) -> None:
        wait_for(lambda: self.proc.poll() is not None or can_connect(self.address), 20, what="gunicorn")
        if self.proc.poll() is not None:
            raise RuntimeError("gunicorn exited:\n" + self.log())
        # the master's socket accepts before any worker runs: wait for the engines themselves
        wait_for(lambda: self.log().count("] serving on ") >= workers, 20, what="%d gunicorn workers" % workers)
        wait_for(lambda: len(self.worker_pids()) == workers, 20, what="%d gunicorn workers" % workers)

    @property
    def upstream(self) -> str:
        """The address as nginx's fastcgi_pass takes it."""
        return self.address

    def worker_pids(self) -> set:
        return child_pids(self.pid)


def child_pids(parent: int) -> set:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                children.add(int(entry))
    return children


@pytest.fixture
def start_gunicorn(tmp_path):
    started = []

    def start(*args, **kw):
        proc = Gunicorn(tmp_path / ("g%d" % len(started)), *args, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGQUIT)


def test_routing_post_and_stream_through_nginx(start_gunicorn, start_nginx):
    server = start_gunicorn("--threads", "4")
    nginx = start_nginx(fastcgi_location(server.upstream))

    r = requests.get(nginx.url + "/caf%C3%A9/x?a=1&b=2", headers={"User-Agent": "ua-test"}, timeout=10)
    assert r.status_code == 200
    data = r.json()
    env = data["environ"]
    assert env["PATH_INFO"] == "/café/x".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "a=1&b=2"
    assert env["RAW_URI"] == "/caf%C3%A9/x?a=1&b=2"
    assert env["HTTP_USER_AGENT"] == "ua-test"
    assert data["multithread"] is True and data["multiprocess"] is True
    assert data["pid"] in server.worker_pids()
    assert data["gc_frozen"] > 1000, "the loaded app was not frozen out of the collector's generations"
    faults = requests.get(nginx.url + "/malloc/churn", timeout=10).json()["faults"]
    assert faults < 1000, "malloc gave the arena's top back %d times" % faults

    body = os.urandom(3 * 1024 * 1024 + 7)
    r = requests.post(nginx.url + "/upload", data=body, timeout=20)
    assert r.status_code == 200
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()

    r = requests.get(nginx.url + "/stream?n=50&size=100000", stream=True, timeout=20)
    assert r.status_code == 200
    assert sum(len(chunk) for chunk in r.iter_content(65536)) == 50 * 100000

    r = requests.get(nginx.url + "/raise", timeout=10)
    assert r.status_code == 500 and "secret" not in r.text
    assert requests.get(nginx.url + "/status/404", timeout=10).status_code == 404


def test_multiplexed_requests_on_one_connection(start_gunicorn):
    server = start_gunicorn("--threads", "4", workers=1)
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, "/sleep?s=1")
        conn.send_request(2, "/fast?n=2")
        conn.send_request(3, "/post", b"hello", method="POST")
        fast = conn.wait_ended(2, 3)
        assert not conn.ended(1), "the slow request must not hold back the others"
        slow = conn.wait_ended(1)[1]
    assert slow.status == 200 and slow.body == b"slept"
    assert json.loads(fast[2].body)["environ"]["QUERY_STRING"] == "n=2"
    assert json.loads(fast[3].body)["body_length"] == 5
    assert all(r.protocol_status == p.REQUEST_COMPLETE for r in (slow, *fast.values()))


def _spread(held: collections.Counter) -> int:
    return max(held.values()) - min(held.values()) if len(held) == 2 else max(held.values())


def test_workers_share_kept_connections_out(start_gunicorn):
    """Kept connections made one at a time alternate between the workers
    (scoreboard.ConnectionShare, as under wsgi_fcgi's own master): gunicorn's
    workers all wait on its listening socket and the first to run took each
    connection (behind nginx with wrk -c32: 32/0, 2/30, 5/27 per worker).
    A worker holds at most one more than the other, 3 when the other was
    more than 10 ms late to take one."""
    server = start_gunicorn("--threads", "4", app="metricsapp:app")
    held: collections.Counter = collections.Counter()
    sockets, spreads = [], []
    try:
        for _ in range(40):
            sock = client.connect(server.address)
            sockets.append(sock)
            held[pid_of(sock)] += 1
            spreads.append(_spread(held))
    finally:
        for sock in sockets:
            sock.close()
    assert len(held) == 2 and max(spreads) <= 3, (held, spreads)


def test_a_replaced_worker_takes_the_new_connections(start_gunicorn):
    """A worker killed with its connections: gunicorn's arbiter starts
    another in its slot of the share, counts cleared, and new connections go
    to it, the one holding none, until it holds as many as the other."""
    server = start_gunicorn("--threads", "4", app="metricsapp:app")
    sockets = [client.connect(server.address) for _ in range(8)]
    try:
        by_pid = collections.Counter(pid_of(sock) for sock in sockets)
        killed = min(by_pid)
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: killed not in server.worker_pids() and len(server.worker_pids()) == 2, 20,
                 what="a new worker")
        wait_for(lambda: server.log().count("] serving on ") >= 3, 20, what="the new worker's engine")
        fresh = (server.worker_pids() - set(by_pid)).pop()
        more = [client.connect(server.address) for _ in range(3)]
        sockets.extend(more)
        taken = [pid_of(sock) for sock in more]
        assert taken.count(fresh) >= 2, (fresh, by_pid, taken)
    finally:
        for sock in sockets:
            sock.close()


def test_unix_socket_single_thread_under_a_prefix(start_gunicorn, start_nginx, tmp_path):
    path = tmp_path / "app.sock"
    server = start_gunicorn("--threads", "1", "--env", "SCRIPT_NAME=/mnt", address="unix:%s" % path, workers=1)
    nginx = start_nginx(fastcgi_location("unix:%s" % path, location="/mnt/"))
    r = requests.get(nginx.url + "/mnt/over/unix", timeout=10)
    assert r.status_code == 200
    data = r.json()
    assert (data["environ"]["SCRIPT_NAME"], data["environ"]["PATH_INFO"]) == ("/mnt", "/over/unix")
    # one process, one thread: the app may rely on neither being true
    assert data["multithread"] is False and data["multiprocess"] is False
    assert request("unix:%s" % path, "GET", "/direct").status == 200
    assert server.worker_pids() == {data["pid"]}


def test_access_log_format_and_hooks(start_gunicorn, tmp_path):
    access_log = tmp_path / "access.log"
    hooks_log = tmp_path / "hooks.log"
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(
        "def pre_request(worker, req):\n"
        "    with open(%r, 'a') as f:\n"
        "        f.write('pre %%s %%s %%s %%s\\n' %% (req.method, req.path, req.query, dict(req.headers).get('X-TEST')))\n"
        "def post_request(worker, req, environ, resp):\n"
        "    with open(%r, 'a') as f:\n"
        "        f.write('post %%s %%s %%s\\n' %% (req.path, resp.status_code, resp.sent))\n"
        % (str(hooks_log), str(hooks_log)))
    fmt = '%(h)s|%(r)s|%(s)s|%(b)s|%(m)s|%(U)s|%(q)s|%({x-test}i)s|%({content-type}o)s|%(L)s|%(D)s'
    server = start_gunicorn("-c", str(conf), "--access-logfile", str(access_log),
                            "--access-logformat", fmt, workers=1)
    response = request(server.address, "GET", "/stream?n=3&size=10", headers=[("X-Test", "xyz")])
    assert response.status == 200 and response.body == b"x" * 30
    assert request(server.address, "GET", "/raise").status == 500

    lines = wait_for(lambda: access_log.exists() and len(access_log.read_text().splitlines()) >= 2 and
                     access_log.read_text().splitlines(), 10, what="two access log lines")
    fields = lines[0].split("|")
    assert fields[:9] == ["127.0.0.1", "GET /stream?n=3&size=10 HTTP/1.1", "200", "30", "GET", "/stream",
                          "n=3&size=10", "xyz", "application/octet-stream"]
    seconds, micros = float(fields[9]), int(fields[10])
    assert 0 <= seconds < 10 and 0 <= micros < 10_000_000
    assert lines[1].split("|")[:4] == ["127.0.0.1", "GET /raise HTTP/1.1", "500", "21"]

    hooks = wait_for(lambda: hooks_log.exists() and len(hooks_log.read_text().splitlines()) >= 4 and
                     hooks_log.read_text().splitlines(), 10, what="hook lines")
    assert hooks == ["pre GET /stream n=3&size=10 xyz", "post /stream 200 30",
                     "pre GET /raise  None", "post /raise 500 21"]


KEEPALIVE_UPSTREAM = """
    upstream app {{
        server {address};
        keepalive 8;
    }}
"""


@pytest.mark.parametrize("keep_conn", [False, True], ids=["new-connections", "fastcgi_keep_conn"])
def test_hup_under_load_has_no_failures(start_gunicorn, start_nginx, keep_conn):
    server = start_gunicorn("--threads", "4", "--keep-alive", "30")
    if keep_conn:
        nginx = start_nginx(fastcgi_location("app", extra="fastcgi_keep_conn on;"),
                            KEEPALIVE_UPSTREAM.format(address=server.upstream))
    else:
        nginx = start_nginx(fastcgi_location(server.upstream))
    old_workers = server.worker_pids()
    loops = [RequestLoop(nginx.url + "/x", max_seconds=20) for _ in range(3)]
    try:
        time.sleep(0.7)
        server.send_signal(signal.SIGHUP)
        wait_for(lambda: server.worker_pids() and not (server.worker_pids() & old_workers), 15,
                 what="the old workers to be replaced")
        time.sleep(0.7)
    finally:
        for loop in loops:
            loop.stop()
    failures = [failure for loop in loops for failure in loop.failures]
    assert not failures, (failures[:3], [line.partition("[error]")[2] for line in nginx.error_log().splitlines()
                                         if "[error]" in line][:5])
    served_by = {json.loads(text)["pid"] for loop in loops for text in loop.pids}
    assert served_by & old_workers and served_by - old_workers, "both generations served requests"


def test_max_requests_recycles_workers_without_failures(start_gunicorn, start_nginx):
    server = start_gunicorn("--threads", "2", "--max-requests", "15", "--max-requests-jitter", "5")
    nginx = start_nginx(fastcgi_location(server.upstream))
    first_workers = server.worker_pids()
    results = []
    with requests.Session() as session:
        for _ in range(80):
            r = session.get(nginx.url + "/n", timeout=15)
            results.append((r.status_code, r.json()["pid"] if r.status_code == 200 else r.text))
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:5]
    served_by = {pid for _, pid in results}
    assert len(served_by) >= 3 and served_by - first_workers
    assert "Autorestarting worker after current request." in server.log()


def test_graceful_term_finishes_running_request(start_gunicorn):
    server = start_gunicorn("--threads", "2", workers=1)
    result = []
    slow = threading.Thread(target=lambda: result.append(request(server.address, "GET", "/sleep?s=1.5")))
    slow.start()
    time.sleep(0.5)
    server.send_signal(signal.SIGTERM)
    slow.join(15)
    assert result and result[0].status == 200 and result[0].body == b"slept"
    assert server.wait(15) == 0


def test_an_idle_worker_stops_on_term_at_once(start_gunicorn):
    """gunicorn installs its SIGTERM (and SIGUSR1) handler with SA_RESTART: the
    signal does not interrupt a thread's wait, and Python runs the handler
    only in the main thread, the standby, which sleeps after a second without
    requests.  Its sleep must end by itself, or an idle worker stops only when
    the master kills it at --graceful-timeout (10 s here), dropping its kept
    connections: a HUP, a systemctl stop or a reload would take that long."""
    server = start_gunicorn("--threads", "2", workers=1)
    assert request(server.address, "GET", "/x").status == 200
    time.sleep(2.5)  # the standby sleeps after a second without requests
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert time.monotonic() - started < 5, "stopped after %.1f s" % (time.monotonic() - started)
    assert "Worker exiting" in server.log() or "stopped" in server.log()


def test_heartbeat_stopped_worker_is_replaced(start_gunicorn):
    server = start_gunicorn("--timeout", "2", workers=1)
    (stuck,) = server.worker_pids()
    os.kill(stuck, signal.SIGSTOP)  # a worker whose loop no longer runs: no heartbeat
    try:
        try:
            wait_for(lambda: (server.worker_pids() - {stuck}), 30, what="a replacement worker")
        except TimeoutError:
            raise AssertionError("no replacement worker:\n" + server.log()[-3000:]) from None
    finally:
        try:
            os.kill(stuck, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "WORKER TIMEOUT (pid:%d)" % stuck in server.log()
    wait_for(lambda: stuck not in server.worker_pids(), 10, what="the stuck worker to be killed")
    assert request(server.address, "GET", "/after").status == 200


def test_importing_wsgi_fcgi_does_not_import_gunicorn():
    code = "import sys, wsgi_fcgi, wsgi_fcgi.cli, wsgi_fcgi.client; print('gunicorn' in sys.modules)"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=project_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_example_config_file(start_gunicorn):
    server = start_gunicorn("-c", str(ROOT / "examples" / "gunicorn.conf.py"), workers=1)
    assert request(server.address, "GET", "/from-config", headers=[("User-Agent", "conf-test")]).status == 200
    assert request(server.address, "GET", "/raise").status == 500
    wait_for(lambda: '"GET /from-config HTTP/1.1" 200' in server.log(), 10, what="the access log line")
    assert '"conf-test" application/json' in server.log()
    wait_for(lambda: "GET /raise answered 500 Internal Server Error" in server.log(), 10,
             what="the post_request hook's warning")


def test_inherited_listener_fd(start_gunicorn):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        server = start_gunicorn(address=address, bind="fd://%d" % listener.fileno(), pass_fds=[listener.fileno()],
                                workers=1)
        response = request(server.address, "GET", "/via-fd")
    assert response.status == 200
    assert json.loads(response.body)["environ"]["PATH_INFO"] == "/via-fd"


def test_quit_stops_at_once(start_gunicorn):
    server = start_gunicorn("--threads", "2", workers=1)
    result = []

    def slow_request():
        try:
            result.append(request(server.address, "GET", "/sleep?s=8", timeout=15).status)
        except (OSError, ConnectionError) as exc:
            result.append(type(exc).__name__)

    slow = threading.Thread(target=slow_request)
    slow.start()
    time.sleep(0.5)
    started = time.monotonic()
    server.send_signal(signal.SIGQUIT)
    assert server.wait(10) == 0
    assert time.monotonic() - started < 5, "QUIT must not wait for the running request"
    slow.join(15)
    assert result and result[0] != 200


def test_keepalive_posts_survive_recycling_under_gunicorn(start_gunicorn, start_nginx):
    # nginx retries no POST that fails on a kept connection: a recycled
    # worker must hand its idle kept connections to the others, not close them.
    import threading
    server = start_gunicorn("-w", "2", "--threads", "4", "--max-requests", "150", "--max-requests-jitter", "30",
                            "--keep-alive", "30")
    nginx = start_nginx(fastcgi_location("app", extra="fastcgi_keep_conn on;"),
                        KEEPALIVE_UPSTREAM.format(address=server.upstream))
    stop = threading.Event()
    results = []

    def post_loop(seed):
        with requests.Session() as session:
            n = 0
            while not stop.is_set():
                n += 1
                body = b"%d-%d" % (seed, n) * 50
                try:
                    r = session.post(nginx.url + "/p", data=body, timeout=10)
                    results.append(r.status_code if r.json()["body_length"] == len(body) else "bad body")
                except (requests.RequestException, ValueError) as exc:
                    results.append(repr(exc))
    threads = [threading.Thread(target=post_loop, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(15)
    failures = [r for r in results if r != 200]
    assert server.log().count("Autorestarting worker") >= 3 and len(results) > 800
    assert not failures, "%d of %d failed: %r" % (len(failures), len(results), failures[:3])
