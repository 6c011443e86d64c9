"""`python -m wsgi_fcgi` and `python -m wsgi_fcgi.client` as a user runs them,
and the library API (`serve`, `Server`)."""

import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
from support import APPS, PYTHON, FcgiConnection, Process, free_port, project_env, wait_for

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p


def run_cli(*args, timeout=20, cwd=APPS, env=None):
    return subprocess.run([PYTHON, "-m", "wsgi_fcgi", *args], cwd=cwd, env=project_env(env),
                          capture_output=True, text=True, timeout=timeout)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("wsgi-fcgi: error:")]


def get(address, target="/"):
    return client.request(address, "GET", target, timeout=10)


# -- app loading --------------------------------------------------------------------

@pytest.mark.parametrize("spec, body", [
    ("protoapp:app", b"ok /x"),
    ("protoapp", b"ok /x"),                                   # no application: app
    ("protoapp:create_app()", b"hello"),
    ("protoapp:create_app('bonjour \u00e0 tous')", "bonjour \u00e0 tous".encode()),
    ("protoapp:create_app(greeting=\"kw\")", b"kw"),
])
def test_app_loading_forms(start_wsgi_fcgi, spec, body):
    server = start_wsgi_fcgi(spec)
    assert get(server.address, "/x").body == body


def test_module_prefers_application(start_wsgi_fcgi, tmp_path):
    (tmp_path / "both.py").write_text(
        "def application(e, s):\n    s('200 OK', [])\n    return [b'application']\n"
        "def app(e, s):\n    s('200 OK', [])\n    return [b'app']\n")
    server = start_wsgi_fcgi("both", cwd=tmp_path)  # the current directory is on sys.path
    assert get(server.address).body == b"application"


def test_chdir(start_wsgi_fcgi, tmp_path):
    appdir = tmp_path / "site"
    appdir.mkdir()
    (appdir / "chdirapp.py").write_text(
        "import os\n"
        "def app(e, s):\n    s('200 OK', [])\n    return [os.getcwd().encode()]\n")
    server = start_wsgi_fcgi("chdirapp:app", "--chdir", str(appdir), cwd=tmp_path)
    assert get(server.address).body == str(appdir).encode()


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0
    # the build (pure Python or compiled core) is checked in tests/hardening/test_compiled_core.py
    assert done.stdout.strip() in ("wsgi-fcgi 0.1.0 (pure Python)", "wsgi-fcgi 0.1.0 (compiled core)")


def test_script_name_option(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--script-name", "/app/")

    def split(target):
        env = json.loads(get(server.address, target).body)["environ"]
        return env["SCRIPT_NAME"], env["PATH_INFO"]
    assert split("/app/x/y?q=1") == ("/app", "/x/y")
    assert split("/app") == ("/app", "")
    assert split("/app/a%2525b") == ("/app", "/a%25b")  # decoded exactly once
    assert split("/app/caf%C3%A9") == ("/app", "/caf\xc3\xa9")
    assert split("/elsewhere") == ("", "/elsewhere")


# -- start-up errors: one line, non-zero exit, no traceback -------------------------

def holding_a_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("case", ["import", "attribute", "not-callable", "in-use", "bad-option",
                                  "bad-bind", "bad-chdir", "app-raises"])
def test_startup_errors_are_one_line(case, tmp_path):
    held = holding_a_port()
    port = "127.0.0.1:%d" % free_port()
    args, expected = {
        "import": (["-b", port, "no_such_module_xyz:app"], "no_such_module_xyz"),
        "attribute": (["-b", port, "protoapp:nope"], "nope"),
        "not-callable": (["-b", port, "protoapp:__doc__"], "not callable"),
        "in-use": (["-b", "127.0.0.1:%d" % held.getsockname()[1], "protoapp:app"], "cannot listen"),
        "bad-option": (["--threads", "zero", "protoapp:app"], "--threads"),
        "bad-bind": (["-b", "127.0.0.1", "protoapp:app"], "port"),
        "bad-chdir": (["-b", port, "--chdir", str(tmp_path / "missing"), "protoapp:app"], "--chdir"),
        "app-raises": (["-b", port, "protoapp:create_app(1, 2, 3)"], "create_app"),
    }[case]
    try:
        started = time.monotonic()
        done = run_cli(*args)
    finally:
        held.close()
    assert done.returncode != 0
    assert time.monotonic() - started < 15
    assert "Traceback" not in done.stderr, done.stderr
    lines = error_lines(done.stderr) or [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]


def test_startup_error_traceback_with_debug_log_level():
    done = run_cli("-b", "127.0.0.1:%d" % free_port(), "--log-level", "debug", "protoapp:create_app(1, 2)")
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert len(error_lines(done.stderr)) == 1


# -- stopping -----------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_removes_the_unix_socket(start_wsgi_fcgi, tmp_path, sig):
    path = tmp_path / "app.sock"
    server = start_wsgi_fcgi("protoapp:app", address="unix:%s" % path)
    assert get(server.address).body == b"ok /"
    server.send_signal(sig)
    assert server.wait(15) == 0
    assert not path.exists()
    assert "Traceback" not in server.log()


def test_term_lets_a_running_request_finish(start_wsgi_fcgi):
    server = start_wsgi_fcgi("protoapp:app")
    conn = FcgiConnection(server.address)
    conn.send_request(1, "/sleep?s=1")
    time.sleep(0.3)
    server.send_signal(signal.SIGTERM)
    assert conn.wait_ended(1)[1].body == b"slept"
    conn.close()
    assert server.wait(15) == 0


# -- listeners ----------------------------------------------------------------------

def test_unix_socket_default_mode_0660(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "app.sock"
    start_wsgi_fcgi("protoapp:app", address="unix:%s" % path)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660


def test_unix_socket_mode_option_and_stale_file_replaced(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # left behind by a server that died
    server = start_wsgi_fcgi("protoapp:app", "--socket-mode", "600", address="unix:%s" % path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert get(server.address, "/unix").body == b"ok /unix"


def test_unix_socket_of_a_live_server_is_not_stolen(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "app.sock"
    server = start_wsgi_fcgi("protoapp:app", address="unix:%s" % path)
    done = run_cli("-b", "unix:%s" % path, "protoapp:app")
    assert done.returncode != 0 and "another server" in done.stderr
    assert get(server.address).body == b"ok /"


def serving(proc, address):
    def ready():
        if proc.proc.poll() is not None:
            raise RuntimeError("exited:\n" + proc.log())
        try:
            return get(address, "/ready").status == 200
        except OSError:
            return False
    wait_for(ready, 20, what="the server on %s" % address)


def test_fd_bind(tmp_path):
    listener = holding_a_port()
    address = "127.0.0.1:%d" % listener.getsockname()[1]
    proc = Process([PYTHON, "-m", "wsgi_fcgi", "--bind", "fd://%d" % listener.fileno(), "protoapp:app"],
                   tmp_path / "fd.log", cwd=APPS, env=project_env(), pass_fds=[listener.fileno()])
    listener.close()
    try:
        serving(proc, address)
        assert get(address, "/via-fd").body == b"ok /via-fd"
    finally:
        assert proc.stop() == 0


def test_spawn_fcgi_convention_listening_socket_on_fd_0(tmp_path):
    listener = holding_a_port()
    address = "127.0.0.1:%d" % listener.getsockname()[1]
    proc = Process([PYTHON, "-m", "wsgi_fcgi", "protoapp:app"], tmp_path / "fd0.log", cwd=APPS,
                   env=project_env(), stdin=listener.fileno())
    listener.close()
    try:
        serving(proc, address)
        assert get(address, "/via-fd0").body == b"ok /via-fd0"
    finally:
        assert proc.stop() == 0


@pytest.mark.skipif(not os.path.exists("/usr/bin/spawn-fcgi"), reason="spawn-fcgi is not installed")
def test_real_spawn_fcgi(tmp_path):
    port = free_port()
    pidfile = tmp_path / "app.pid"
    done = subprocess.run(["/usr/bin/spawn-fcgi", "-a", "127.0.0.1", "-p", str(port), "-P", str(pidfile),
                           "-d", str(APPS), "--", PYTHON, "-m", "wsgi_fcgi", "--error-log", str(tmp_path / "log"),
                           "protoapp:app"], env=project_env(), capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    pid = int(pidfile.read_text())
    try:
        address = "127.0.0.1:%d" % port
        wait_for(lambda: (tmp_path / "log").exists() and "serving on" in (tmp_path / "log").read_text(), 20,
                 what="the spawned server")
        assert get(address, "/spawned").body == b"ok /spawned"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                 open("/proc/%d/stat" % pid).read().split()[2] == "Z", 15, what="the spawned server to stop")


def ipv6_loopback_works():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here")
def test_ipv6_loopback(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", address="[::1]:%d" % free_port("::1"))
    env = json.loads(get(server.address, "/v6").body)["environ"]
    assert env["PATH_INFO"] == "/v6"


def test_multiple_binds(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "second.sock"
    server = start_wsgi_fcgi("protoapp:app", "--bind", "unix:%s" % path)
    assert get(server.address, "/tcp").body == b"ok /tcp"
    assert get("unix:%s" % path, "/unix").body == b"ok /unix"


# -- --allowed-servers / FCGI_WEB_SERVER_ADDRS ------------------------------------------

def answer_from(address, source):
    """Send a request from `source`; the answer, or None if closed without one."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0)) as sock:
        try:
            sock.sendall(client.encode_request(1, client.cgi_params("GET", "/allowed")))
            return client.read_response(sock, 1)
        except (ConnectionError, BrokenPipeError):
            return None


@pytest.mark.parametrize("how", ["option", "env"])
def test_allowed_servers(start_wsgi_fcgi, how):
    if how == "option":
        server = start_wsgi_fcgi("protoapp:app", "--allowed-servers", "127.0.0.2,10.0.0.0/8")
    else:
        server = start_wsgi_fcgi("protoapp:app", env={"FCGI_WEB_SERVER_ADDRS": "127.0.0.2"})
    assert answer_from(server.address, "127.0.0.1") is None
    assert answer_from(server.address, "127.0.0.2").body == b"ok /allowed"
    wait_for(lambda: "refused a connection from 127.0.0.1" in server.log(), 5, what="the refusal log line")


# -- --max-body-size -----------------------------------------------------------------

def test_max_body_size_refuses_a_large_content_length_without_reading(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--max-body-size", "1M")
    with FcgiConnection(server.address) as conn:
        # only the params: the 10 MB body is never sent, the answer comes anyway
        conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)
                  + p.encode_params(1, client.cgi_params("POST", "/upload", body_length=10 << 20)))
        response = conn.wait_ended(1)[1]
        assert response.status == 413
        conn.records.clear()
        conn.send_request(2, "/after", b"small", method="POST")
        assert json.loads(conn.wait_ended(2)[2].body)["body_length"] == 5
    small = client.request(server.address, "POST", "/fits", body=b"x" * (1 << 20))
    assert json.loads(small.body)["body_length"] == 1 << 20


def test_max_body_size_without_content_length(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--max-body-size", "100K")
    with FcgiConnection(server.address) as conn:
        # a chunked upload (fastcgi_request_buffering off): no CONTENT_LENGTH
        conn.send(p.encode_begin_request(1, p.RESPONDER, 0)
                  + p.encode_params(1, client.cgi_params("POST", "/chunked"))
                  + p.encode_stream(p.STDIN, 1, b"z" * 300000) + p.encode_record(p.STDIN, 1))
        assert conn.wait_ended(1)[1].status == 413
    assert get(server.address).status == 200


# -- python -m wsgi_fcgi.client ----------------------------------------------------------

def run_client(*args, stdin=None):
    return subprocess.run([PYTHON, "-m", "wsgi_fcgi.client", *args], env=project_env(), input=stdin,
                          capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def envserver(tmp_path_factory):
    from support import WsgiFcgi
    proc = WsgiFcgi("envapp:app", tmp_path_factory.mktemp("client"), "--threads", "2")
    yield proc
    proc.stop()


def test_client_get_prints_the_body_and_exits_0(envserver):
    done = run_client("--connect", envserver.address, "/a%20b?q=1")
    assert done.returncode == 0
    env = json.loads(done.stdout)["environ"]
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["REQUEST_METHOD"]) == ("/a b", "q=1", "GET")


@pytest.mark.parametrize("status, code", [(200, 0), (204, 0), (302, 0), (399, 0), (404, 1), (500, 1), (503, 1)])
def test_client_exit_codes(envserver, status, code):
    assert run_client("--connect", envserver.address, "/status/%d" % status).returncode == code


def test_client_include_headers(envserver):
    done = run_client("--connect", envserver.address, "-i", "/cookies")
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200\r\n")
    assert head.count(b"Set-Cookie: ") == 3
    assert body == b"cookies"


def test_client_data_headers_and_params(envserver):
    done = run_client("--connect", envserver.address, "-d", "a=1&b=2", "-H", "Content-Type: application/x-www-form-urlencoded",
                      "-H", "X-Thing: yes", "--param", "HTTPS=on", "/form")
    answer = json.loads(done.stdout)
    env = answer["environ"]
    assert env["REQUEST_METHOD"] == "POST" and answer["body_length"] == 7
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["HTTP_X_THING"] == "yes" and env["wsgi.url_scheme"] == "https"


def test_client_data_file_from_stdin(envserver):
    done = run_client("--connect", envserver.address, "-X", "PUT", "--data-file", "-", "/put", stdin=b"\x00\xff" * 1000)
    answer = json.loads(done.stdout)
    assert answer["environ"]["REQUEST_METHOD"] == "PUT" and answer["body_length"] == 2000


def test_client_get_values(envserver):
    done = run_client("--connect", envserver.address, "--get-values")
    assert done.returncode == 0
    assert sorted(done.stdout.decode().split()) == ["FCGI_MAX_CONNS=1024", "FCGI_MAX_REQS=100",
                                                    "FCGI_MPXS_CONNS=1"]


def test_client_stderr_goes_to_stderr(envserver):
    done = run_client("--connect", envserver.address, "/stderr")
    assert done.stdout == b"ok" and b"a line for the error log" in done.stderr


def test_client_connection_refused_exits_2():
    done = run_client("--connect", "127.0.0.1:%d" % free_port(), "/")
    assert done.returncode == 2 and b"wsgi_fcgi.client:" in done.stderr


# -- the library ------------------------------------------------------------------------

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from " + environ["PATH_INFO"].encode()]


def test_server_in_a_thread_serve_forever_and_shutdown():
    from wsgi_fcgi import Server
    server = Server(hello, bind="127.0.0.1:0", threads=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = server.addresses[0]
    try:
        assert get(address, "/lib").body == b"hello from /lib"
        assert server.requests_ended == 1 and server.connections_accepted == 1
    finally:
        server.shutdown()
        assert server.wait_stopped(10)
        thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        get(address)


def test_server_with_a_unix_socket_removes_it(tmp_path):
    from wsgi_fcgi import Server
    path = tmp_path / "lib.sock"
    server = Server(hello, bind="unix:%s" % path, threads=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert get("unix:%s" % path, "/u").body == b"hello from /u"
    finally:
        server.shutdown(graceful=False)
        thread.join(10)
    assert not path.exists()


def test_serve_in_a_process_stops_on_term(tmp_path):
    port = free_port()
    code = ("import protoapp\nfrom wsgi_fcgi import serve\n"
            "serve(protoapp.app, bind='127.0.0.1:%d', threads=2)\n" % port)
    proc = Process([PYTHON, "-c", code], tmp_path / "serve.log", cwd=APPS, env=project_env())
    address = "127.0.0.1:%d" % port
    try:
        serving(proc, address)
        assert get(address, "/serve").body == b"ok /serve"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.stop()
