#!/usr/bin/env python3
"""Benchmark WSGI servers behind a real nginx, over FastCGI (or HTTP).

For every contender and repeat: write an nginx config into a temporary
directory, start nginx (1 worker, loopback only) and the contender's backend,
wait until a check request through nginx returns the right answer, run a
short wrk warm-up, then the measured wrk run while sampling the backend's
process tree in /proc (RSS, CPU time).  Everything is stopped (by the process
ids this script started) before the next contender starts.  Contenders are
interleaved A B C A B C ... and the median over repeats is reported.

Standard library only.  Needs nginx and wrk on PATH (see setup.sh) and, for
the Python contenders, the virtualenv made by setup.sh ($BENCH_VENV).
`benchmarks/run.py` (`make bench`) runs it once per scenario; the project's
checkout (two directories up) is the default `--project`.

    python3 run.py --list
    python3 run.py --contenders flup-threaded,uwsgi-fastcgi --app hello
    python3 run.py --project . --contenders wsgi_fcgi,flup-threaded --repeat 3 \\
        --ratio wsgi_fcgi,flup-threaded --json /tmp/result.json
"""
import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(HERE, "apps")
LAUNCHERS_DIR = os.path.join(HERE, "launchers")
NATIVE_SRC = os.path.join(HERE, "native", "fcgi_hello.c")
PROJECT = os.path.dirname(os.path.dirname(HERE))   # benchmarks/harness -> the checkout
DEFAULT_VENV = os.environ.get("BENCH_VENV", "/tmp/wsgi-fcgi-bench-venv")
LOOPBACK = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("[bench] %s\n" % msg)
    sys.stderr.flush()


# --------------------------------------------------------------- workloads --
ECHO_BODY = b"0123456789abcdef" * 4096          # 64 KiB request body
ECHO_EXPECTED = ("%d %s\n" % (len(ECHO_BODY), hashlib.sha256(ECHO_BODY).hexdigest())).encode()


def _check_hello(status, headers, body, app, opts):
    ctype = headers.get("content-type", "")
    if status != 200 or body != b"Hello, World!" or not ctype.startswith("text/plain"):
        return "expected 200 text/plain 'Hello, World!', got %s %r %r" % (status, ctype, body[:80])
    return None


def _check_echo(status, headers, body, app, opts):
    if status != 200 or body.strip() != ECHO_EXPECTED.strip():
        return "expected 200 %r, got %s %r" % (ECHO_EXPECTED, status, body[:120])
    return None


def _expect_filled(status, body, want, fill):
    """None when the answer is 200 and `want` bytes, every one `fill`."""
    if status != 200 or len(body) != want or body.strip(fill):
        return "expected 200 and %d bytes of %r, got %s and %d bytes" % (want, fill.decode(), status, len(body))
    return None


def _check_big(status, headers, body, app, opts):
    return _expect_filled(status, body, opts.big_mib * 1024 * 1024, b"x")


def _check_download(status, headers, body, app, opts):
    return _expect_filled(status, body, 4 * 1024 * 1024, b"d")  # apps/download.py's SIZE


def _check_stream(status, headers, body, app, opts):
    lines = body.splitlines()
    if status != 200 or len(lines) != 2000 or lines[-1] != b"line 2000 of 2000, a streamed row":
        return "expected 200 and 2000 lines, got %s and %d lines" % (status, len(lines))
    return None


def _check_flask(status, headers, body, app, opts):
    if status != 200 or b"<h1>Hello, bench!</h1>" not in body or body.count(b"<tr") != 21:
        return "expected the rendered page, got %s %r" % (status, body[:120])
    return None


def _check_flask_json(status, headers, body, app, opts):
    try:
        ok = status == 200 and json.loads(body)["count"] == 20
    except (ValueError, KeyError, TypeError):
        ok = False
    return None if ok else "expected JSON with count 20, got %s %r" % (status, body[:120])


APPS = {
    # name: module in apps/, request path, method, body, default connections
    "hello": dict(module="hello", path="/", method="GET", body=None, conns=32, check=_check_hello),
    "wait": dict(module="wait", path="/", method="GET", body=None, conns=32, check=_check_hello),
    "echo": dict(module="echo", path="/", method="POST", body=ECHO_BODY, conns=32, check=_check_echo),
    "big": dict(module="big", path="/?mib={big_mib}", method="GET", body=None, conns=4, check=_check_big),
    "download": dict(module="download", path="/", method="GET", body=None, conns=8, check=_check_download),
    "stream": dict(module="stream", path="/", method="GET", body=None, conns=8, check=_check_stream),
    "flask": dict(module="flaskapp", path="/page?name=bench", method="GET", body=None, conns=32,
                  check=_check_flask),
    "flask-json": dict(module="flaskapp", path="/api/items?n=20", method="GET", body=None, conns=32,
                       check=_check_flask_json),
}


# -------------------------------------------------------------- contenders --
class Contender:
    def __init__(self, name, kind, cmd, desc, apps=None, cwd=None, needs=(), keep_conn=True):
        self.name = name
        self.kind = kind            # "static" | "fastcgi" | "http" | "uwsgi"
        self.keep_conn = keep_conn  # fastcgi_keep_conn default for this contender
        self.cmd = cmd              # list of str.format templates, or None
        self.desc = desc
        self.apps = apps            # None = every app
        self.cwd = cwd              # template, default: apps dir
        self.needs = needs          # placeholders that must resolve to an existing path

    @property
    def uses_sock(self):
        return any("{sock}" in a for a in (self.cmd or []))


PY_BASE = ["{python}"]
# flup's pools are sized to connections+8 (maxSpare); with its defaults kept
# connections starve (see launchers/flup_server.py)
FLUP = PY_BASE + ["{launchers}/flup_server.py", "--pool", "{pool}"]
UWSGI_BASE = ["{venv}/bin/uwsgi", "--module", "{module}:app", "--pythonpath", "{appdir}", "--chdir",
              "{appdir}", "--master", "--processes", "{workers}", "--threads", "{threads}",
              "--disable-logging", "--die-on-term", "--need-app", "--single-interpreter"]
CONTENDERS = [
    Contender("nginx-static", "static", None,
              "nginx answers by itself (return 200 for hello, sendfile of a file for big): "
              "the ceiling of the wrk+nginx path on this box", apps={"hello", "big"}),
    Contender("c-libfcgi", "fastcgi",
              ["{native}", LOOPBACK + ":{port}", "{cthreads}", "{cmode}"],
              "native C responder on libfcgi (FCGX_Accept_r, max(threads, connections) threads, "
              "TCP): the native-code limit of the FastCGI path", apps={"hello", "big"},
              needs=("native",)),
    Contender("c-libfcgi-unix", "fastcgi",
              ["{native}", "{sock}", "{cthreads}", "{cmode}"],
              "same C responder on a unix socket", apps={"hello", "big"}, needs=("native",)),
    Contender("flup-threaded", "fastcgi",
              FLUP + ["threaded", "{module}:app", LOOPBACK + ":{port}"],
              "flup.server.fcgi.WSGIServer(app, bindAddress=('127.0.0.1', port)): one process, a "
              "thread per connection (the classic pure-Python FastCGI anchor)"),
    Contender("flup-threaded-nodelay", "fastcgi",
              FLUP + ["threaded", "{module}:app", LOOPBACK + ":{port}", "--nodelay"],
              "flup-threaded with TCP_NODELAY set on accepted connections (flup itself never sets it)"),
    Contender("flup-threaded-unix", "fastcgi",
              FLUP + ["threaded", "{module}:app", "{sock}"],
              "flup-threaded on a unix socket (no Nagle/delayed-ACK stalls)"),
    Contender("flup-fork", "fastcgi",
              FLUP + ["fork", "{module}:app", LOOPBACK + ":{port}"],
              "flup.server.fcgi_fork.WSGIServer: pre-forked processes, one connection each"),
    Contender("flup-fork-unix", "fastcgi",
              FLUP + ["fork", "{module}:app", "{sock}"],
              "flup-fork on a unix socket"),
    Contender("uwsgi-fastcgi", "fastcgi", UWSGI_BASE + ["--fastcgi-socket", LOOPBACK + ":{port}"],
              "uWSGI (C server, embedded Python) speaking FastCGI: master + workers x threads; "
              "fastcgi_keep_conn off by default (uWSGI closes the connection after each response)",
              needs=("venv/bin/uwsgi",), keep_conn=False),
    Contender("uwsgi-native", "uwsgi", UWSGI_BASE + ["--socket", LOOPBACK + ":{port}"],
              "the same uWSGI over its own uwsgi protocol (nginx uwsgi_pass): how uWSGI is usually "
              "deployed behind nginx", needs=("venv/bin/uwsgi",)),
    Contender("gunicorn-sync-http", "http",
              PY_BASE + ["-m", "gunicorn", "--bind", LOOPBACK + ":{port}", "--workers", "{workers}",
                         "--worker-class", "sync", "--chdir", "{appdir}", "--log-level", "warning",
                         "{module}:app"],
              "gunicorn sync workers behind nginx proxy_pass (HTTP/1.1, no keep-alive to backend)"),
    Contender("gunicorn-gthread-http", "http",
              PY_BASE + ["-m", "gunicorn", "--bind", LOOPBACK + ":{port}", "--workers", "{workers}",
                         "--worker-class", "gthread", "--threads", "{threads}", "--chdir", "{appdir}",
                         "--log-level", "warning", "{module}:app"],
              "gunicorn gthread workers behind nginx proxy_pass (HTTP/1.1 keep-alive)"),
    Contender("fcgisgi", "fastcgi",
              PY_BASE + ["{launchers}/fcgisgi_server.py", "{module}:app", LOOPBACK + ":{port}",
                         "--threads", "{threads}"],
              "fcgisgi.run_wsgi_server (2026: asyncio FastCGI server, WSGI app in a thread pool), TCP"),
    Contender("fcgisgi-unix", "fastcgi",
              PY_BASE + ["{launchers}/fcgisgi_server.py", "{module}:app", "{sock}", "--threads", "{threads}"],
              "fcgisgi on a unix socket"),
    Contender("wsgi_fcgi", "fastcgi",
              ["{project_python}", "-m", "wsgi_fcgi", "--bind", LOOPBACK + ":{port}", "--workers",
               "{workers}", "--threads", "{threads}", "{module}:app"],
              "the project under test, run from --project DIR", cwd="{project}", needs=("project",)),
]
CONTENDER_MAP = {c.name: c for c in CONTENDERS}


def parse_define(text):
    """--define 'NAME=KIND:COMMAND TEMPLATE' -> Contender."""
    m = re.match(r"^([A-Za-z0-9_.-]+)=(fastcgi|http|uwsgi):(.+)$", text, re.S)
    if not m:
        raise SystemExit("--define expects NAME=fastcgi|http|uwsgi:COMMAND, got %r" % text)
    name, kind, cmd = m.groups()
    return Contender(name, kind, shlex.split(cmd), "user-defined: " + cmd.strip(),
                     cwd="{project}" if "{project" in cmd else None)


# ------------------------------------------------------------ processes ----
STARTED = []          # every Popen this script started (for the final cleanup)
SEEN_TREE = {}        # pid -> starttime of every descendant seen while sampling


def proc_stat(pid):
    """(ppid, utime+stime ticks, starttime) of pid, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15, starttime 22
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                kids.setdefault(st[0], []).append(int(name))
    return kids


def tree(root):
    """root and all its descendants that are alive now."""
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def tree_cpu_ticks(root):
    total = 0
    for pid in tree(root):
        st = proc_stat(pid)
        if st:
            total += st[1]
    return total


def rss_kib(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except (OSError, ValueError, IndexError):
        return 0


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def alive(pid, starttime=None):
    st = proc_stat(pid)
    return st is not None and (starttime is None or st[2] == starttime)


def start_process(cmd, log_path, env=None, cwd=None):
    logf = open(log_path, "ab")
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             env=env, cwd=cwd, start_new_session=True)
    finally:
        logf.close()
    STARTED.append(p)
    return p


def stop_process(p, sig=signal.SIGTERM, grace=5.0):
    """Stop a process we started, its process group and any descendant seen."""
    if p is None:
        return
    known = {}
    if p.poll() is None:
        for pid in tree(p.pid):
            st = proc_stat(pid)
            if st:
                known[pid] = st[2]
    known.update({pid: t for pid, t in SEEN_TREE.items() if alive(pid, t)})
    for s in (sig, signal.SIGKILL):
        if p.poll() is None:
            try:
                os.killpg(p.pid, s)       # start_new_session: pgid == pid
            except (ProcessLookupError, PermissionError):
                pass
        for pid, t in known.items():
            if pid != p.pid and alive(pid, t):
                try:
                    os.kill(pid, s)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + (grace if s == sig else 3.0)
        while time.monotonic() < deadline:
            if p.poll() is not None and not any(alive(pid, t) for pid, t in known.items()):
                break
            time.sleep(0.05)
        else:
            continue
        break
    try:
        p.wait(timeout=1)
    except subprocess.TimeoutExpired:
        pass
    for pid in known:
        SEEN_TREE.pop(pid, None)


def cleanup_all():
    for p in reversed(STARTED):
        if p.poll() is None:
            stop_process(p, grace=2.0)
    for pid, t in list(SEEN_TREE.items()):
        if alive(pid, t):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class TreeSampler(threading.Thread):
    """Samples the summed RSS (and PSS) of a process tree every `interval` s."""

    def __init__(self, root, interval=0.25):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self.hwm = {}
        self._halt = threading.Event()

    def sample(self, with_pss):
        pids = tree(self.root)
        for pid in pids:
            st = proc_stat(pid)
            if st:
                SEEN_TREE[pid] = st[2]
        self.peak_rss = max(self.peak_rss, sum(rss_kib(p) for p in pids))
        self.peak_procs = max(self.peak_procs, len(pids))
        if with_pss:
            self.peak_pss = max(self.peak_pss, sum(pss_kib(p) for p in pids))
        for pid in pids:
            self.hwm[pid] = max(self.hwm.get(pid, 0), status_kib(pid, "VmHWM"))

    def run(self):
        n = 0
        while not self._halt.is_set():
            self.sample(with_pss=(n % 4 == 0))
            n += 1
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(timeout=5)
        self.sample(with_pss=True)


def machine_busy_pct(seconds=0.5):
    a = read_cpu_stat()
    time.sleep(seconds)
    b = read_cpu_stat()
    total, idle = b[0] - a[0], b[1] - a[1]
    return 100.0 * (total - idle) / total if total > 0 else 0.0


def wait_for_quiet(opts):
    """Wait (at most opts.quiet_wait s) until the machine is nearly idle; returns busy %."""
    deadline = time.monotonic() + opts.quiet_wait
    busy = machine_busy_pct()
    while busy > opts.quiet_threshold and time.monotonic() < deadline:
        time.sleep(1.5)
        busy = machine_busy_pct()
    return round(busy, 1)


def read_cpu_stat():
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return sum(vals[:8]), vals[3] + vals[4], vals[7] if len(vals) > 7 else 0


# ------------------------------------------------------------------ nginx ----
FASTCGI_PARAMS = """\
# Debian's /etc/nginx/fastcgi_params (nginx 1.22, bookworm)
fastcgi_param  QUERY_STRING       $query_string;
fastcgi_param  REQUEST_METHOD     $request_method;
fastcgi_param  CONTENT_TYPE       $content_type;
fastcgi_param  CONTENT_LENGTH     $content_length;

fastcgi_param  SCRIPT_NAME        $fastcgi_script_name;
fastcgi_param  REQUEST_URI        $request_uri;
fastcgi_param  DOCUMENT_URI       $document_uri;
fastcgi_param  DOCUMENT_ROOT      $document_root;
fastcgi_param  SERVER_PROTOCOL    $server_protocol;
fastcgi_param  REQUEST_SCHEME     $scheme;
fastcgi_param  HTTPS              $https if_not_empty;

fastcgi_param  GATEWAY_INTERFACE  CGI/1.1;
fastcgi_param  SERVER_SOFTWARE    nginx/$nginx_version;

fastcgi_param  REMOTE_ADDR        $remote_addr;
fastcgi_param  REMOTE_PORT        $remote_port;
fastcgi_param  REMOTE_USER        $remote_user;
fastcgi_param  SERVER_ADDR        $server_addr;
fastcgi_param  SERVER_PORT        $server_port;
fastcgi_param  SERVER_NAME        $server_name;

# PHP only, required if PHP was built with --enable-force-cgi-redirect
fastcgi_param  REDIRECT_STATUS    200;

# current Debian packages also pass the host this way (not the raw Host header)
fastcgi_param  HTTP_HOST          $host;
"""

NGINX_CONF = """\
# generated by run.py
{user}
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_max_body_size 64m;
    client_body_buffer_size 128k;
    # large responses stream with back-pressure instead of spilling to disk
    proxy_max_temp_file_size 0;
    fastcgi_max_temp_file_size 0;
    uwsgi_max_temp_file_size 0;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
{upstream}
    server {{
        listen {loopback}:{nport} backlog=1024;
        server_name localhost;
{location}
    }}
}}
"""

UPSTREAM = """\
    upstream backend {{
        server {server} max_fails=0;
        keepalive {keepalive};
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
"""

LOCATION_FASTCGI = """\
        location / {{
            include {d}/fastcgi_params;
            # WSGI app mounted at the root: SCRIPT_NAME "" and PATH_INFO = the path
            fastcgi_split_path_info ^()(.*)$;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_pass backend;
            fastcgi_keep_conn {keep_conn};
        }}
"""

LOCATION_UWSGI = """\
        location / {{
            include {d}/uwsgi_params;
            uwsgi_pass backend;
        }}
"""

UWSGI_PARAMS = """\
# Debian's /etc/nginx/uwsgi_params (nginx 1.22, bookworm)
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;

uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;

uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;

uwsgi_param  HTTP_HOST          $host;
"""

LOCATION_HTTP = """\
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
"""

LOCATION_STATIC_HELLO = """\
        location / {
            default_type text/plain;
            return 200 "Hello, World!";
        }
"""

LOCATION_STATIC_FILE = """\
        location / {{
            root {d}/www;
            default_type application/octet-stream;
            try_files /big.bin =404;
        }}
"""


def effective_keep_conn(contender, opts):
    if opts.keep_conn == "auto":
        return contender.keep_conn
    return opts.keep_conn == "on"


def write_nginx_conf(d, nport, contender, app_name, server, opts):
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(d, "tmp", sub), exist_ok=True)
    upstream = ""
    if contender.kind == "static":
        if app_name == "big":
            os.makedirs(os.path.join(d, "www"), exist_ok=True)
            with open(os.path.join(d, "www", "big.bin"), "wb") as f:
                chunk = b"x" * (1024 * 1024)
                for _ in range(opts.big_mib):
                    f.write(chunk)
            location = LOCATION_STATIC_FILE.format(d=d)
        else:
            location = LOCATION_STATIC_HELLO
    else:
        upstream = UPSTREAM.format(server=server, keepalive=opts.upstream_keepalive)
        if contender.kind == "fastcgi":
            with open(os.path.join(d, "fastcgi_params"), "w") as f:
                f.write(FASTCGI_PARAMS)
            location = LOCATION_FASTCGI.format(
                d=d, keep_conn="on" if effective_keep_conn(contender, opts) else "off")
        elif contender.kind == "uwsgi":
            with open(os.path.join(d, "uwsgi_params"), "w") as f:
                f.write(UWSGI_PARAMS)
            location = LOCATION_UWSGI.format(d=d)
        else:
            location = LOCATION_HTTP.format()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(user=user, d=d, upstream=upstream, loopback=LOOPBACK, nport=nport,
                             location=location)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


# -------------------------------------------------------------------- wrk ----
WRK_LUA = r"""
-- generated by run.py
wrk.method = "@METHOD@"
@BODY@
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%.0f,\"duration_us\":%.0f,\"bytes\":%.0f,\"err_connect\":%.0f," ..
    "\"err_read\":%.0f,\"err_write\":%.0f,\"err_status\":%.0f,\"err_timeout\":%.0f," ..
    "\"lat_min_us\":%.0f,\"lat_mean_us\":%.1f,\"lat_stdev_us\":%.1f,\"lat_max_us\":%.0f," ..
    "\"p50_us\":%.0f,\"p75_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def write_wrk_script(d, app):
    body = ""
    if app["body"] is not None:
        # the body is a repeated 16-byte pattern; rebuild it in Lua
        unit = app["body"][:16].decode()
        body = ('wrk.body = string.rep("%s", %d)\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"' % (unit, len(app["body"]) // 16))
        assert unit.encode() * (len(app["body"]) // 16) == app["body"]
    path = os.path.join(d, "bench.lua")
    with open(path, "w") as f:
        f.write(WRK_LUA.replace("@METHOD@", app["method"]).replace("@BODY@", body))
    return path


def parse_wrk(text):
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    # fall back on wrk's own summary
    out = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if not m:
        return None
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}.get(m.group(3), 1.0)
    out["requests"] = int(m.group(1))
    out["duration_us"] = float(m.group(2)) * scale * 1e6
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    for i, k in enumerate(("err_connect", "err_read", "err_write", "err_timeout")):
        out[k] = int(m.group(i + 1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["err_status"] = int(m.group(1)) if m else 0
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % pct, text, re.M)
        if m:
            out["p%s_us" % pct] = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
    return out


def run_wrk(opts, url, conns, duration, script, out_path):
    """Run wrk to completion; returns (parsed dict or None, raw text, wrk cpu seconds)."""
    cmd = [opts.wrk, "-t", str(opts.wrk_threads), "-c", str(conns), "-d", "%ds" % duration,
           "--timeout", "%ds" % opts.wrk_timeout, "--latency", "-s", script, url]
    with open(out_path, "wb") as f:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
    STARTED.append(p)
    deadline = time.monotonic() + duration + opts.wrk_timeout + 30
    cpu = None
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu = ru.ru_utime + ru.ru_stime
            break
        if time.monotonic() > deadline:
            stop_process(p, signal.SIGKILL, grace=1)
            break
        time.sleep(0.1)
    with open(out_path, errors="replace") as f:
        text = f.read()
    return parse_wrk(text), text, cpu


# ---------------------------------------------------------------- helpers ----
def free_ports(n):
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def can_connect(port=None, path=None):
    try:
        if path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = path
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (LOOPBACK, port)
        s.settimeout(1.0)
        try:
            s.connect(target)
            return True
        finally:
            s.close()
    except OSError:
        return False


def http_request(port, method, path, body=None, timeout=10.0):
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def nginx_errors_since(path, offset):
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            lines = [l for l in f.read().splitlines()
                     if any(t in l for t in ("[error]", "[crit]", "[alert]", "[emerg]"))]
    except OSError:
        return 0, None
    return len(lines), (lines[0][:300] if lines else None)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------ environment ----
def cmd_output(cmd, timeout=20):
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return r.stdout.decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unavailable (%s)" % e


def collect_versions(opts):
    v = {}
    v["nginx"] = cmd_output([opts.nginx, "-v"]).splitlines()[0] if opts.nginx else "missing"
    v["wrk"] = cmd_output([opts.wrk, "-v"]).splitlines()[0] if opts.wrk else "missing"
    v["libfcgi"] = cmd_output(["dpkg-query", "-W", "-f=${Version}", "libfcgi-dev"])
    v["kernel"] = platform.release()
    v["cpus"] = os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            v["cpu_model"] = m.group(1) if m else "?"
    except OSError:
        pass
    if os.path.exists(opts.python):
        code = ("import sys, importlib.metadata as md\n"
                "out = {'python': sys.version.split()[0]}\n"
                "for n in ('flup','gunicorn','flask','werkzeug','jinja2','uwsgi','pyuwsgi'):\n"
                "    try: out[n] = md.version(n)\n"
                "    except md.PackageNotFoundError: pass\n"
                "print(repr(out))\n")
        try:
            import ast
            v.update(ast.literal_eval(cmd_output([opts.python, "-c", code])))
        except (ValueError, SyntaxError):
            pass
    uw = os.path.join(opts.venv, "bin", "uwsgi")
    if os.path.exists(uw):
        v["uwsgi_bin"] = cmd_output([uw, "--version"])
    if opts.project and os.path.exists(os.path.join(opts.project, ".git")):
        v["project_commit"] = cmd_output(["git", "-C", opts.project, "rev-parse", "--short", "HEAD"])
    return v


def ensure_native(opts, tmp):
    """Path of the compiled C responder, building it into tmp if needed."""
    prebuilt = os.path.join(opts.venv, "bin", "fcgi_hello")
    if os.path.exists(prebuilt) and os.path.getmtime(prebuilt) >= os.path.getmtime(NATIVE_SRC):
        return prebuilt, None
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        return None, "no C compiler (run benchmarks/harness/setup.sh)"
    out = os.path.join(tmp, "fcgi_hello")
    r = subprocess.run([gcc, "-O2", "-o", out, NATIVE_SRC, "-lfcgi", "-lpthread"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    if r.returncode != 0:
        return None, "build failed: " + r.stdout.decode(errors="replace").strip()[-300:]
    return out, None


def base_env(extra_paths):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(extra_paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def availability(c, app_name, opts, variables):
    """None when the contender can run, else the reason it can't."""
    if c.apps is not None and app_name not in c.apps:
        return "n/a for app %s" % app_name
    if c.kind != "static" and not opts.nginx:
        return "nginx not found"
    if "native" in c.needs and not variables.get("native"):
        return "C responder unavailable: %s" % opts.native_error
    if "venv/bin/uwsgi" in c.needs and not os.path.exists(os.path.join(opts.venv, "bin", "uwsgi")):
        return "uwsgi not installed in %s (run benchmarks/harness/setup.sh)" % opts.venv
    if c.cmd and "{python}" in c.cmd[0] and not os.path.exists(opts.python):
        return "virtualenv %s missing (run benchmarks/harness/setup.sh)" % opts.venv
    if "project" in c.needs:
        if not opts.project:
            return "not available: no --project DIR given"
        env = base_env(project_paths(opts.project) + [APPS_DIR])
        try:
            r = subprocess.run([opts.project_python, "-c", "import wsgi_fcgi"], cwd=opts.project,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "not available: %s" % e
        if r.returncode != 0:
            last = (r.stdout.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            return "not available: %s" % last
    return None


def project_paths(project):
    paths = []
    if project:
        if os.path.isdir(os.path.join(project, "src")):
            paths.append(os.path.join(project, "src"))
        paths.append(project)
    return paths


# --------------------------------------------------------------- one run ----
def run_once(c, app_name, opts, repeat_idx, tmp):
    app = APPS[app_name]
    conns = opts.connections or app["conns"]
    rec = {"contender": c.name, "kind": c.kind, "app": app_name, "repeat": repeat_idx + 1,
           "connections": conns, "duration_s": opts.duration, "workers": opts.workers,
           "threads": opts.threads, "status": "ok",
           "keep_conn": effective_keep_conn(c, opts) if c.kind == "fastcgi" else None,
           "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    if opts.quiet_wait > 0:
        rec["busy_before_pct"] = wait_for_quiet(opts)
    d = tempfile.mkdtemp(prefix="%s-%d-" % (c.name, repeat_idx + 1), dir=tmp)
    nport, bport = free_ports(2)
    sock = os.path.join(d, "backend.sock")
    server = ("unix:" + sock) if c.uses_sock else "%s:%d" % (LOOPBACK, bport)
    path = app["path"].format(big_mib=opts.big_mib)
    url = "http://%s:%d%s" % (LOOPBACK, nport, path)
    variables = dict(opts.variables, port=bport, sock=sock, module=app["module"],
                     app=os.path.join(APPS_DIR, app["module"] + ".py"),
                     cthreads=max(opts.threads, conns), pool=conns + 8,
                     cmode="big" if app_name == "big" else "hello")
    conf = write_nginx_conf(d, nport, c, app_name, server, opts)
    script = write_wrk_script(d, app)
    nginx_log = os.path.join(d, "nginx-error.log")
    backend_log = os.path.join(d, "backend.log")
    nginx_p = backend_p = None
    try:
        if c.cmd:
            cmd = [a.format(**variables) for a in c.cmd]
            rec["command"] = " ".join(shlex.quote(a) for a in cmd)
            cwd = c.cwd.format(**variables) if c.cwd else APPS_DIR
            extra = (project_paths(opts.project) if (c.cwd or "").startswith("{project") else []) + [APPS_DIR]
            backend_p = start_process(cmd, backend_log, env=base_env(extra), cwd=cwd)
        nginx_p = start_process([opts.nginx, "-p", d + "/", "-e", nginx_log, "-c", conf],
                                os.path.join(d, "nginx.out"))
        # readiness: backend listening, nginx listening, then a correct answer through nginx
        deadline = time.monotonic() + opts.start_timeout
        why = None
        while True:
            if nginx_p.poll() is not None:
                why = "nginx exited (%s): %s" % (nginx_p.returncode, tail(nginx_log, 5))
                break
            if backend_p is not None and backend_p.poll() is not None:
                why = "backend exited with %s: %s" % (backend_p.returncode, tail(backend_log))
                break
            backend_up = backend_p is None or (can_connect(path=sock) if c.uses_sock
                                                else can_connect(port=bport))
            if backend_up and can_connect(port=nport):
                try:
                    status, headers, body = http_request(nport, app["method"], path, app["body"],
                                                         timeout=max(2.0, deadline - time.monotonic()))
                    bad = app["check"](status, headers, body, app_name, opts)
                    if bad is None:
                        why = None
                        break
                    why = "wrong response: " + bad
                    if status != 502 and status != 504:
                        break           # a real (wrong) answer: no point in waiting
                except (OSError, http.client.HTTPException) as e:
                    why = "check request failed: %s" % e
            if time.monotonic() > deadline:
                why = (why or "backend never listened") + " (after %ss)" % opts.start_timeout
                break
            time.sleep(0.1)
        if why:
            rec["status"] = "failed"
            rec["error"] = why
            rec["backend_log"] = tail(backend_log)
            rec["nginx_log"] = tail(nginx_log, 5)
            return rec

        if opts.warmup > 0:
            run_wrk(opts, url, conns, opts.warmup, script, os.path.join(d, "wrk-warmup.out"))

        sampler = TreeSampler(backend_p.pid) if backend_p else None
        if sampler:
            sampler.start()
        err_offset = file_size(nginx_log)
        cpu0_b = tree_cpu_ticks(backend_p.pid) if backend_p else 0
        cpu0_n = tree_cpu_ticks(nginx_p.pid)
        sys0 = read_cpu_stat()
        with open("/proc/loadavg") as f:
            rec["loadavg_before"] = float(f.read().split()[0])
        res, text, wrk_cpu = run_wrk(opts, url, conns, opts.duration, script, os.path.join(d, "wrk.out"))
        sys1 = read_cpu_stat()
        cpu1_n = tree_cpu_ticks(nginx_p.pid)
        cpu1_b = tree_cpu_ticks(backend_p.pid) if backend_p else 0
        if sampler:
            sampler.stop()
        if res is None or not res.get("requests"):
            rec["status"] = "failed"
            rec["error"] = "wrk produced no result: " + text[-400:]
            rec["backend_log"] = tail(backend_log)
            rec["nginx_log"] = tail(nginx_log, 5)
            return rec
        secs = res["duration_us"] / 1e6
        reqs = res["requests"]
        rec.update({
            "rps": round(reqs / secs, 1),
            "requests": int(reqs),
            "mib_per_s": round(res.get("bytes", 0) / secs / 1048576, 2) if res.get("bytes") else None,
            "p50_ms": round(res.get("p50_us", 0) / 1000, 3),
            "p90_ms": round(res.get("p90_us", 0) / 1000, 3) if "p90_us" in res else None,
            "p99_ms": round(res.get("p99_us", 0) / 1000, 3),
            "p999_ms": round(res.get("p999_us", 0) / 1000, 3) if "p999_us" in res else None,
            "max_ms": round(res.get("lat_max_us", 0) / 1000, 3) if "lat_max_us" in res else None,
            "mean_ms": round(res.get("lat_mean_us", 0) / 1000, 3) if "lat_mean_us" in res else None,
            "non2xx": int(res.get("err_status", 0)),
            "socket_errors": int(sum(res.get(k, 0) for k in ("err_connect", "err_read", "err_write",
                                                            "err_timeout"))),
            "socket_errors_detail": {k[4:]: int(res.get(k, 0)) for k in
                                     ("err_connect", "err_read", "err_write", "err_timeout")},
            "nginx_cpu_us_per_req": round((cpu1_n - cpu0_n) / CLK_TCK / reqs * 1e6, 2),
            "wrk_cpu_us_per_req": round(wrk_cpu / reqs * 1e6, 2) if wrk_cpu is not None else None,
        })
        total, idle, steal = (b - a for a, b in zip(sys0, sys1, strict=True))
        if total > 0:
            rec["machine_busy_pct"] = round(100.0 * (total - idle) / total, 1)
            rec["steal_pct"] = round(100.0 * steal / total, 1)
            # CPU used by anything but wrk, nginx and the backend (noise from other work)
            ours = (cpu1_n - cpu0_n + cpu1_b - cpu0_b) + (wrk_cpu or 0) * CLK_TCK
            rec["foreign_cpu_pct"] = round(max(0.0, 100.0 * (total - idle - ours) / total), 1)
        if sampler:
            rec["backend_cpu_us_per_req"] = round((cpu1_b - cpu0_b) / CLK_TCK / reqs * 1e6, 2)
            rec["rss_peak_kib"] = sampler.peak_rss
            rec["pss_peak_kib"] = sampler.peak_pss
            rec["hwm_sum_kib"] = sum(sampler.hwm.values())
            rec["backend_processes"] = sampler.peak_procs
        # Little's law: connections that had a request in flight on average.  wrk
        # silently ignores requests that never complete, so a server that leaves
        # some connections unanswered shows up here, not in wrk's error counts.
        # (Only a rough gauge: when wrk itself saturates a core, the time a finished
        # connection waits for wrk to send its next request is not in the latency,
        # hence the generous threshold and no verdict for nginx-static.)
        if rec["mean_ms"]:
            rec["active_conns"] = round(rec["rps"] * rec["mean_ms"] / 1000, 1)
            if rec["active_conns"] < 0.5 * conns and c.kind != "static":
                rec["stalled_conns_est"] = int(round(conns - rec["active_conns"]))
        n_err, first = nginx_errors_since(nginx_log, err_offset)
        rec["nginx_error_lines"] = n_err
        if first:
            rec["nginx_first_error"] = first
        if backend_p is not None and backend_p.poll() is not None:
            rec["status"] = "crashed"
            rec["error"] = "backend exited during the run with %s" % backend_p.returncode
            rec["backend_log"] = tail(backend_log)
        elif rec["non2xx"] or rec["socket_errors"]:
            rec["status"] = "errors"
        elif rec.get("stalled_conns_est"):
            rec["status"] = "stalled"
        return rec
    finally:
        stop_process(backend_p)
        stop_process(nginx_p, signal.SIGTERM)
        if opts.keep_tmp:
            rec["tmpdir"] = d
        else:
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------- reporting ----
def summarize(name, runs, kind, unavailable=None):
    s = {"contender": name, "kind": kind}
    if unavailable:
        s["status"] = unavailable
        return s
    ok = [r for r in runs if "rps" in r]
    failed = [r for r in runs if "rps" not in r]
    if not ok:
        s["status"] = "failed: " + (failed[0].get("error", "?") if failed else "no runs")
        return s
    s["status"] = "ok" if all(r["status"] == "ok" for r in ok) and not failed else \
        ",".join(sorted({r["status"] for r in runs if r["status"] != "ok"}))
    s["app"] = ok[0]["app"]
    s["connections"] = ok[0]["connections"]
    s["runs"] = len(ok)
    s["rps"] = [r["rps"] for r in ok]
    s["rps_median"] = round(median(s["rps"]), 1)
    for key in ("p50_ms", "p99_ms", "p999_ms", "mean_ms", "active_conns", "backend_cpu_us_per_req",
                "nginx_cpu_us_per_req",
                "wrk_cpu_us_per_req", "mib_per_s", "machine_busy_pct", "steal_pct",
                "foreign_cpu_pct"):
        m = median([r.get(key) for r in ok])
        if m is not None:
            s[key] = round(m, 3)
    s["non2xx"] = sum(r["non2xx"] for r in ok)
    s["socket_errors"] = sum(r["socket_errors"] for r in ok)
    s["nginx_error_lines"] = sum(r.get("nginx_error_lines", 0) for r in ok)
    for key in ("rss_peak_kib", "pss_peak_kib", "hwm_sum_kib", "backend_processes"):
        vals = [r[key] for r in ok if key in r]
        if vals:
            s[key] = max(vals)
    if failed:
        s["failed_runs"] = len(failed)
    return s


def fmt(v, spec="%.1f", none="-"):
    return none if v is None else spec % v


def print_table(summaries, header):
    cols = ["contender", "req/s med", "[min .. max]", "p50 ms", "p99 ms", "non2xx", "sockerr",
            "ngx err", "active", "RSS MiB", "PSS MiB", "be us/req", "ngx us/req", "status"]
    rows = []
    for s in summaries:
        if "rps_median" not in s:
            rows.append([s["contender"], "-"] + [""] * (len(cols) - 3) + [s["status"]])
            continue
        rows.append([
            s["contender"], fmt(s["rps_median"], "%.0f"),
            "[%.0f .. %.0f]" % (min(s["rps"]), max(s["rps"])),
            fmt(s.get("p50_ms"), "%.2f"), fmt(s.get("p99_ms"), "%.2f"),
            str(s["non2xx"]), str(s["socket_errors"]), str(s["nginx_error_lines"]),
            fmt(s.get("active_conns"), "%.1f"),
            fmt(s["rss_peak_kib"] / 1024 if "rss_peak_kib" in s else None, "%.1f"),
            fmt(s["pss_peak_kib"] / 1024 if "pss_peak_kib" in s else None, "%.1f"),
            fmt(s.get("backend_cpu_us_per_req"), "%.0f"), fmt(s.get("nginx_cpu_us_per_req"), "%.0f"),
            s["status"]])
    widths = [max(len(str(r[i])) for r in rows + [cols]) for i in range(len(cols))]
    print(header)
    last = len(cols) - 1

    def render(r):
        return "  ".join(str(c).ljust(w) if i in (0, last) else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
    print(render(cols))
    print("-" * len(render(cols)))
    for r in rows:
        print(render(r))


def print_ratio(pair, runs_by_name):
    a, b = pair
    ra = {r["repeat"]: r["rps"] for r in runs_by_name.get(a, []) if "rps" in r}
    rb = {r["repeat"]: r["rps"] for r in runs_by_name.get(b, []) if "rps" in r}
    common = sorted(set(ra) & set(rb))
    if not common:
        print("ratio %s/%s: no repeat where both ran" % (a, b))
        return None
    ratios = [ra[i] / rb[i] for i in common]
    print("ratio %s/%s req/s per repeat: %s  median %.3f" % (
        a, b, ", ".join("%.3f" % x for x in ratios), statistics.median(ratios)))
    return {"a": a, "b": b, "per_repeat": [round(x, 4) for x in ratios],
            "median": round(statistics.median(ratios), 4)}


# ------------------------------------------------------------------- main ----
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contenders", default="all",
                    help="comma-separated names, or 'all' (default); see --list")
    ap.add_argument("--app", default="hello", choices=sorted(APPS))
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured wrk warm-up (2)")
    ap.add_argument("--connections", type=int, default=None,
                    help="wrk connections (default 32; 4 for --app big)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    ap.add_argument("--wrk-timeout", type=int, default=5, help="wrk per-request timeout s (5)")
    ap.add_argument("--workers", type=int, default=1, help="backend processes (1)")
    ap.add_argument("--threads", type=int, default=8, help="backend threads per process (8)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds; median reported (1)")
    ap.add_argument("--big-mib", type=int, default=16, help="response size for --app big (16)")
    ap.add_argument("--upstream-keepalive", type=int, default=32,
                    help="nginx upstream keepalive connection cache (32)")
    ap.add_argument("--keep-conn", choices=("auto", "on", "off"), default="auto",
                    help="fastcgi_keep_conn: auto = on, except for contenders that close the "
                         "connection after each response (uwsgi-fastcgi); on/off forces it")
    ap.add_argument("--project", default=PROJECT, help="checkout of the wsgi_fcgi project (this one)")
    ap.add_argument("--python", dest="project_python_arg", default=None,
                    help="interpreter for the wsgi_fcgi contender (default: the venv's)")
    ap.add_argument("--venv", default=DEFAULT_VENV, help="virtualenv from setup.sh ($BENCH_VENV)")
    ap.add_argument("--define", action="append", default=[], metavar="NAME=KIND:CMD",
                    help="extra contender, e.g. 'mine=fastcgi:{python} -m mypkg --port {port} "
                         "{module}:app' (placeholders: port sock module app appdir workers threads "
                         "python venv project)")
    ap.add_argument("--start-timeout", type=int, default=30, help="seconds to become ready (30)")
    ap.add_argument("--quiet-wait", type=int, default=0, metavar="S",
                    help="before each run, wait up to S seconds for the machine to be idle (0: don't)")
    ap.add_argument("--quiet-threshold", type=float, default=10.0, metavar="PCT",
                    help="machine CPU %% below which it counts as idle for --quiet-wait (10)")
    ap.add_argument("--ratio", default=None, metavar="A,B", help="print A/B req/s per repeat and median")
    ap.add_argument("--json", default=None, metavar="FILE", help="write all runs and summaries here")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the per-run temp dirs (logs, configs)")
    ap.add_argument("--list", action="store_true", help="list contenders and exit")
    return ap.parse_args(argv)


def main(argv=None):
    opts = parse_args(argv)
    for d in opts.define:
        c = parse_define(d)
        CONTENDERS.append(c)
        CONTENDER_MAP[c.name] = c
    if opts.list:
        for c in CONTENDERS:
            print("%-22s %-8s %s" % (c.name, c.kind, c.desc))
        return 0
    names = [c.name for c in CONTENDERS] if opts.contenders == "all" else \
        [n.strip() for n in opts.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDER_MAP]
    if unknown:
        print("unknown contender(s): %s; known: %s" % (", ".join(unknown), ", ".join(CONTENDER_MAP)),
              file=sys.stderr)
        return 2
    ratio = None
    if opts.ratio:
        ratio = [x.strip() for x in opts.ratio.split(",")]
        if len(ratio) != 2:
            print("--ratio expects A,B", file=sys.stderr)
            return 2
    opts.venv = os.path.abspath(opts.venv)
    opts.python = os.path.join(opts.venv, "bin", "python")
    opts.project = os.path.abspath(opts.project) if opts.project else None
    if opts.project_python_arg:
        opts.project_python = (os.path.abspath(opts.project_python_arg) if os.sep in opts.project_python_arg
                               else shutil.which(opts.project_python_arg) or opts.project_python_arg)
    else:
        opts.project_python = opts.python
    opts.nginx = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx") or None
    opts.wrk = shutil.which("wrk")
    if not opts.wrk:
        print("wrk not found: run benchmarks/harness/setup.sh", file=sys.stderr)
        return 2
    if not opts.nginx:
        print("nginx not found: run benchmarks/harness/setup.sh", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    tmp = tempfile.mkdtemp(prefix="wsgi-fcgi-bench-")
    os.chmod(tmp, 0o755)
    try:
        native, opts.native_error = ensure_native(opts, tmp)
        opts.variables = {"python": opts.python, "venv": opts.venv, "appdir": APPS_DIR,
                          "launchers": LAUNCHERS_DIR, "workers": opts.workers, "threads": opts.threads,
                          "project": opts.project or "", "project_python": opts.project_python,
                          "native": native or "", "here": HERE}
        versions = collect_versions(opts)
        meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "argv": sys.argv if argv is None else ["run.py"] + list(argv),
                "app": opts.app, "duration_s": opts.duration, "warmup_s": opts.warmup,
                "connections": opts.connections or APPS[opts.app]["conns"], "workers": opts.workers,
                "threads": opts.threads, "repeat": opts.repeat, "wrk_threads": opts.wrk_threads,
                "upstream_keepalive": opts.upstream_keepalive, "keep_conn": opts.keep_conn,
                "versions": versions}
        log("app=%s connections=%s duration=%ss workers=%s threads=%s repeat=%s" % (
            opts.app, meta["connections"], opts.duration, opts.workers, opts.threads, opts.repeat))

        unavailable = {}
        for n in names:
            why = availability(CONTENDER_MAP[n], opts.app, opts, opts.variables)
            if why:
                unavailable[n] = why
                log("%s: %s" % (n, why))
        runs_by_name = {n: [] for n in names}
        runnable = [n for n in names if n not in unavailable]
        dead = set()
        for r in range(opts.repeat):
            for n in runnable:
                if n in dead:
                    continue
                log("round %d/%d: %s" % (r + 1, opts.repeat, n))
                rec = run_once(CONTENDER_MAP[n], opts.app, opts, r, tmp)
                runs_by_name[n].append(rec)
                if "rps" in rec:
                    log("  %s: %.0f req/s p50 %.2f ms p99 %.2f ms non2xx %d sockerr %d active %s/%d "
                        "rss %.1f MiB%s" % (
                        n, rec["rps"], rec["p50_ms"], rec["p99_ms"], rec["non2xx"], rec["socket_errors"],
                        rec.get("active_conns"), rec["connections"], rec.get("rss_peak_kib", 0) / 1024,
                        "" if rec["status"] == "ok" else " [%s]" % rec["status"]))
                else:
                    log("  %s: %s: %s" % (n, rec["status"], rec.get("error")))
                    if r == 0 or all("rps" not in x for x in runs_by_name[n]):
                        dead.add(n)     # failed to start: don't retry in later rounds
        summaries = [summarize(n, runs_by_name[n], CONTENDER_MAP[n].kind, unavailable.get(n))
                     for n in names]
        for s in summaries:
            print(json.dumps(dict(s, app=opts.app), sort_keys=False))
        print()
        header = "app=%s connections=%s duration=%ss workers=%s threads=%s repeat=%s (%s)" % (
            opts.app, meta["connections"], opts.duration, opts.workers, opts.threads, opts.repeat,
            meta["date"])
        print_table(summaries, header)
        ratio_res = None
        if ratio:
            print()
            ratio_res = print_ratio(ratio, runs_by_name)
        for n, runs in runs_by_name.items():
            for rec in runs:
                if "rps" not in rec and rec.get("backend_log"):
                    print("\n%s (round %d) %s: %s\n  backend log tail:\n    %s" % (
                        n, rec["repeat"], rec["status"], rec.get("error", ""),
                        rec["backend_log"].replace("\n", "\n    ")), file=sys.stderr)
        if opts.json:
            doc = {"meta": meta, "summary": summaries,
                   "runs": [rec for n in names for rec in runs_by_name[n]], "ratio": ratio_res}
            with open(opts.json, "w") as f:
                json.dump(doc, f, indent=1)
            log("wrote %s" % opts.json)
        return 0
    finally:
        cleanup_all()
        if not opts.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log("kept %s" % tmp)


if __name__ == "__main__":
    sys.exit(main())
