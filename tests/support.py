"""Test helpers: start real processes (wsgi_fcgi, nginx, ...) on loopback,
wait for them, and stop them by PID.  Every wait is bounded."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: where the wsgi_fcgi under test is imported from: the checkout, or with
#: WSGI_FCGI_TEST_TREE the compiled build `make test` runs the suite on too
PACKAGE_TREE = Path(os.environ.get("WSGI_FCGI_TEST_TREE") or ROOT).resolve()
APPS = Path(__file__).resolve().parent / "apps"
PYTHON = sys.executable
NGINX_PARAMS = Path("/etc/nginx/fastcgi_params")
#: /caf%C3%A9/x as the app sees it: the UTF-8 bytes as a WSGI (latin-1) string
LATIN1_CAFE = "/café/x".encode().decode("latin-1")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05,
             what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def read_pid(path: Path) -> int | None:
    """The pid in a pid file; None while it is absent or half written (USR2
    moves it to .oldbin before the new master writes its own)."""
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


def process_gone(pid: int) -> bool:
    """The process has exited (it may be a zombie its parent has not reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def read_until_eof(sock) -> bytes:
    """Everything the peer sends until it closes its side."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def can_connect(address: str) -> bool:
    """address: HOST:PORT or unix:PATH"""
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1)
                sock.connect(address[5:])
        else:
            host, _, port = address.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                pass
        return True
    except OSError:
        return False


class Process:
    """A child process in its own session, its output in a log file."""

    def __init__(self, cmd: Sequence[str], log_path: Path, *, cwd: Path | None = None,
                 env: dict | None = None, stdin=subprocess.DEVNULL, pass_fds=(), preexec_fn=None) -> None:
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=env, stdin=stdin, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds,
                                     preexec_fn=preexec_fn)
        self.pid = self.proc.pid

    def await_start(self, ready: Callable[[], object]) -> None:
        """Run the start-up wait `ready`; when it fails the process is stopped
        before the error goes on: no fixture holds it yet, and a server whose
        workers never boot would outlive the test (gunicorn respawns them
        forever)."""
        try:
            ready()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the process, wait, then kill its whole process group."""
        code = self.proc.poll()
        if code is None:
            try:
                os.kill(self.pid, sig)
                code = self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if code is None:
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._log_file.close()
        return code


def project_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_TREE), str(APPS), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FCGI_WEB_SERVER_ADDRS", None)
    if extra:
        env.update(extra)
    return env


class WsgiFcgi(Process):
    """`python -m wsgi_fcgi ... APP`, listening on `address` (a free port by default)."""

    def __init__(self, app: str, tmp: Path, *args: str, address: str | None = None,
                 cwd: Path | None = None, env: dict | None = None, wait: bool = True,
                 log_name: str = "wsgi_fcgi.log", **popen) -> None:
        self.address = address or "127.0.0.1:%d" % free_port()
        cmd = [PYTHON, "-m", "wsgi_fcgi", "--bind", self.address, *args, app]
        super().__init__(cmd, Path(tmp) / log_name, cwd=cwd or APPS, env=project_env(env), **popen)
        if wait:
            self.await_start(self.wait_ready)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("wsgi_fcgi exited with %s:\n%s" % (self.proc.returncode, self.log()))
            return worker_answers(self.address)
        wait_for(ready, timeout, what="wsgi_fcgi on %s" % self.address)


def worker_answers(address: str) -> bool:
    """True once a process accepts on `address`: under the master the socket
    listens before any worker runs, so connecting is not enough.  An
    FCGI_GET_VALUES answer, or a close (--allowed-servers refusing us), shows
    a worker accepted; silence means the connection waits in the backlog."""
    from wsgi_fcgi import client, protocol
    try:
        with client.connect(address, timeout=1.0) as sock:
            sock.sendall(protocol.encode_get_values([protocol.MAX_CONNS]))
            sock.recv(1024)
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    except OSError:
        return False


NGINX_TEMPLATE = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    proxy_temp_path {tmp}/proxy_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    client_max_body_size 200m;
    {http}
    {server_block}
}}
"""


SERVER_BLOCK = """server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        {server}
    }}"""


class Nginx(Process):
    """A real nginx with `server_conf` inside its server block, on a free port.

    `{params}` in the config text is replaced by the path of Debian's stock
    fastcgi_params; `{tmp}` by the temp directory.  With `server_conf=None`
    there is no server block of ours: `http_conf` brings its own, listening on
    `port` (see `shipped_nginx_conf`).  A copy of the stock fastcgi_params
    sits next to nginx.conf, so `include fastcgi_params;` works as in /etc/nginx.
    """

    def __init__(self, tmp: Path, server_conf: str | None, http_conf: str = "",
                 port: int | None = None) -> None:
        self.tmp = Path(tmp) / "nginx"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        values = {"params": str(NGINX_PARAMS), "tmp": str(self.tmp)}
        (self.tmp / "fastcgi_params").write_bytes(NGINX_PARAMS.read_bytes())
        server_block = "" if server_conf is None else SERVER_BLOCK.format(
            port=self.port,
            server=server_conf.replace("{params}", values["params"]).replace("{tmp}", values["tmp"]))
        conf = NGINX_TEMPLATE.format(
            tmp=self.tmp, user="user root;" if os.geteuid() == 0 else "", server_block=server_block,
            http=http_conf.replace("{params}", values["params"]).replace("{tmp}", values["tmp"]))
        self.conf_path = self.tmp / "nginx.conf"
        self.conf_path.write_text(conf)
        super().__init__(["/usr/sbin/nginx", "-c", self.conf_path, "-p", self.tmp, "-e",
                          self.tmp / "nginx-error.log"], self.tmp / "nginx-stdout.log")
        self.await_start(self._wait_ready)

    def _wait_ready(self) -> None:
        wait_for(lambda: self.proc.poll() is not None or can_connect("127.0.0.1:%d" % self.port),
                 15, what="nginx")
        if self.proc.poll() is not None:
            raise RuntimeError("nginx exited:\n%s\n%s" % (self.log(), self.error_log()))

    def error_log(self) -> str:
        try:
            return (self.tmp / "nginx-error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGQUIT, timeout: float = 10.0):
        return super().stop(sig, timeout)


def fastcgi_location(upstream: str, *, location: str = "/", extra: str = "") -> str:
    """A location block passing to `upstream` with the stock fastcgi_params."""
    return """
        location %s {
            include {params};
            fastcgi_pass %s;
            %s
        }
    """ % (location, upstream, extra)


NGINX_CONFS = ROOT / "nginx"
_SHIPPED_LISTEN = "listen 127.0.0.1:8080;"


def shipped_nginx_conf(name: str, port: int, backends: Sequence[str]) -> str:
    """The text of nginx/NAME, the config users copy, with only its documented
    values replaced: `listen 127.0.0.1:8080` by `port`, and the upstream's
    `server ADDRESS` lines, in order, by `backends` (HOST:PORT or unix:PATH).
    Load it with `Nginx(tmp, None, text, port=port)`."""
    text = (NGINX_CONFS / name).read_text()
    if text.count(_SHIPPED_LISTEN) != 1:
        raise ValueError("%s: expected one %r" % (name, _SHIPPED_LISTEN))
    text = text.replace(_SHIPPED_LISTEN, "listen 127.0.0.1:%d;" % port)
    upstream_servers = re.compile(r"^([ \t]+server[ \t]+)([^\s;]+)", re.M)
    found = upstream_servers.findall(text)
    if len(found) != len(backends):
        raise ValueError("%s has %d upstream servers, %d backends given" % (name, len(found), len(backends)))
    addresses = iter(backends)
    return upstream_servers.sub(lambda m: m.group(1) + next(addresses), text)


class FcgiConnection:
    """A raw FastCGI connection for protocol tests: send any bytes, and collect
    the records of several (multiplexed) requests as they come back."""

    def __init__(self, address: str, timeout: float = 15.0) -> None:
        from wsgi_fcgi import client, protocol
        self.sock = client.connect(address, timeout)
        self.parser = protocol.RecordParser()
        self.records: list = []  # every record received, in order
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_request(self, request_id: int, target: str = "/", body: bytes = b"", *, method: str = "GET",
                     keep_conn: bool = True, role: int | None = None, data: bytes | None = None,
                     headers=(), extra=()) -> None:
        from wsgi_fcgi import client, protocol
        params = client.cgi_params(method, target, headers=headers, body_length=len(body) if body else None,
                                   extra=extra)
        self.send(client.encode_request(request_id, params, body, role=role or protocol.RESPONDER,
                                        keep_conn=keep_conn, data=data))

    def receive(self) -> bool:
        """One recv; False once the server closed its side."""
        data = self.sock.recv(262144)
        if not data:
            self.eof = True
            return False
        self.records += self.parser.feed(data)
        return True

    def ended(self, request_id: int) -> bool:
        from wsgi_fcgi import protocol
        return any(r.type == protocol.END_REQUEST and r.request_id == request_id for r in self.records)

    def wait_ended(self, *request_ids: int) -> dict:
        """Read until every id has its FCGI_END_REQUEST; {id: client.Response}."""
        while not all(self.ended(i) for i in request_ids):
            if not self.receive():
                raise ConnectionError("connection closed before FCGI_END_REQUEST of %s; got %r"
                                      % (request_ids, self.records))
        return {i: self.response(i) for i in request_ids}

    def response(self, request_id: int):
        from wsgi_fcgi import client, protocol
        mine = [r for r in self.records if r.request_id == request_id]
        end = next(r for r in mine if r.type == protocol.END_REQUEST)
        return client.parse_cgi_response(b"".join(r.content for r in mine if r.type == protocol.STDOUT),
                                         b"".join(r.content for r in mine if r.type == protocol.STDERR),
                                         protocol.decode_end_request(end.content))

    def wait_eof(self) -> None:
        """Read (and keep) records until the server closes the connection."""
        while self.receive():
            pass

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> FcgiConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pool_status(address: str, path: str = "/status") -> dict:
    """The --status-path page as JSON, fetched straight over FastCGI."""
    import json

    from wsgi_fcgi import client
    response = client.request(address, "GET", path + "?json", timeout=10)
    assert response.status == 200, response
    return json.loads(response.body)


def worker_pids(address: str, path: str = "/status") -> set:
    """Pids of the ready (idle or busy) workers on the status page."""
    return {w["pid"] for w in pool_status(address, path)["worker_list"] if w["state"] in ("idle", "busy")}


def pid_of(sock: socket.socket) -> int:
    """The pid of the worker serving kept connection `sock` (one request for
    /pid on it: tests/apps/metricsapp.py)."""
    from wsgi_fcgi import client
    sock.sendall(client.encode_request(1, client.cgi_params("GET", "/pid"), keep_conn=True))
    return int(client.read_response(sock, 1).body)


class RequestLoop:
    """GET `url` over and over in a thread (bounded by `max_seconds`), counting outcomes."""

    def __init__(self, url: str, max_seconds: float = 30.0) -> None:
        import threading
        self.url = url
        self.ok = 0
        self.failures: list = []
        self.pids: list = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import requests
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                r = requests.get(self.url, timeout=15)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                continue
            if r.status_code == 200:
                self.ok += 1
                self.pids.append(r.text)
            else:
                self.failures.append("%d %s" % (r.status_code, r.text[:200]))

    def stop(self) -> RequestLoop:
        self._stop.set()
        self._thread.join(20)
        return self


def process_stats(pid: int) -> dict:
    """Resident memory (KiB), threads and open file descriptors of a live process, from /proc.
    ProcessLookupError for one that exited (a zombie has no memory left)."""
    try:
        status = Path("/proc/%d/status" % pid).read_text()
    except FileNotFoundError:
        raise ProcessLookupError("process %d is gone" % pid) from None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        raise ProcessLookupError("process %d exited" % pid)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"]),
            "fds": len(os.listdir("/proc/%d/fd" % pid))}


def environ_of(url: str, **kw) -> dict:
    """GET `url` (envapp behind some front end) and return the environ the app saw."""
    import requests

    response = requests.get(url, timeout=10, **kw)
    assert response.status_code == 200, response.text
    return response.json()["environ"]


def assert_head_then_get(url: str) -> None:
    """HEAD then GET `url` (envapp behind some front end) on one kept client
    connection.  wsgi_fcgi answers HEAD with the head alone while its
    Content-Length names the GET's body (RFC 3875 4.3.3): a front end that
    waited for those bytes would hold the HEAD, and the GET behind it."""
    import requests

    with requests.Session() as session:
        head = session.head(url, timeout=10)
        assert head.status_code == 200, head.text
        assert int(head.headers.get("Content-Length", "1")) > 0
        get = session.get(url, timeout=10)
        assert get.status_code == 200 and get.json()["environ"]["REQUEST_METHOD"] == "GET"


def children_of(pid: int) -> set:
    """Pids of the live child processes of `pid` (from /proc; zombies left out)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


class PostLoop:
    """Keep-alive POSTs to `url` from one requests.Session in a thread
    (bounded by `max_seconds`), counting outcomes; `bodies` are the answers."""

    def __init__(self, url: str, max_seconds: float = 40.0, payload: bytes = b"p" * 2000) -> None:
        import threading
        self.url = url
        self.payload = payload
        self.ok = 0
        self.failures: list = []
        self.bodies: list = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import requests
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    r = session.post(self.url, data=self.payload, timeout=20)
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))
                    continue
                if 200 <= r.status_code < 300:
                    self.ok += 1
                    self.bodies.append(r.text)
                else:
                    self.failures.append("%d %s" % (r.status_code, r.text[:200]))

    def stop(self) -> PostLoop:
        self._stop.set()
        self._thread.join(30)
        return self


def wait_children(pid: int, count: int, timeout: float = 20.0) -> set:
    """Wait until the process `pid` (a master) has exactly `count` children; their pids."""
    wait_for(lambda: len(children_of(pid)) == count, timeout, interval=0.1,
             what="%d workers under %d" % (count, pid))
    return children_of(pid)


class FastCGILoad:
    """`count` FastCGI clients in threads, started `ramp` s apart, each sending
    GET `path` over and over on a new connection each time (as nginx does
    without fastcgi_keep_conn), until `stop()`; `failures` lists what failed."""

    def __init__(self, address: str, count: int, path: str = "/sleep?s=0.5", ramp: float = 0.2,
                 max_seconds: float = 40.0) -> None:
        import threading
        self.address = address
        self.path = path
        self.failures: list = []
        self.ok = 0
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = []
        for _ in range(count):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
            time.sleep(ramp)

    def _run(self) -> None:
        from wsgi_fcgi import client
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                response = client.request(self.address, "GET", self.path, timeout=20)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if response.status == 200:
                self.ok += 1
            else:
                self.failures.append(response.status)

    def stop(self) -> FastCGILoad:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self
