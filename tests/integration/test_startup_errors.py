"""Start-up mistakes as people make them: one clear line, exit 1, no
traceback, and the reason also in --error-log FILE.  And the client: no
traceback for bad input or a bad response."""

import socket
import subprocess
import threading
import time

import pytest
from support import APPS, PYTHON, free_port, project_env

from wsgi_fcgi import protocol as p


def run_cli(*args, cwd=APPS, timeout=30):
    return subprocess.run([PYTHON, "-m", "wsgi_fcgi", *args], cwd=cwd, env=project_env(), capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("wsgi-fcgi: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def bind_here() -> str:
    return "127.0.0.1:%d" % free_port()


@pytest.mark.parametrize("args, expected", [
    (["protoapp:create_app"], "write protoapp:create_app() to call it"),
    (["protoapp.py"], "write MODULE:APP, e.g. protoapp:app"),
    (["protoapp.py:app"], "write MODULE:APP, e.g. protoapp:app"),
    (["--pid", "/missing/dir/x.pid", "protoapp:app"], "cannot write --pid /missing/dir/x.pid: No such file"),
])
def test_one_line_and_exit_1(args, expected):
    done = run_cli("--bind", bind_here(), *args)
    assert done.returncode == 1, done.stderr
    assert expected in one_error_line(done)


def test_port_out_of_range():
    done = run_cli("--bind", "127.0.0.1:99999", "protoapp:app")
    assert done.returncode == 1
    assert "port 99999 out of range (0-65535)" in one_error_line(done)


def test_workers_upper_bound():
    done = run_cli("--workers", "100000", "protoapp:app")
    assert done.returncode == 2  # argparse's usage error
    assert "100000 workers is more than 512" in done.stderr and "Traceback" not in done.stderr


def test_pid_error_leaves_no_socket_file(tmp_path):
    sock = tmp_path / "app.sock"
    done = run_cli("--bind", "unix:%s" % sock, "--pid", str(tmp_path / "no" / "x.pid"), "protoapp:app")
    assert done.returncode == 1 and "--pid" in one_error_line(done)
    assert not sock.exists()


def test_load_error_names_file_and_line_and_goes_to_the_error_log(tmp_path):
    (tmp_path / "brokenapp.py").write_text("import os\n\nvalue = 1 / 0\n")
    error_log = tmp_path / "error.log"
    done = run_cli("--bind", bind_here(), "--error-log", str(error_log), "brokenapp:app", cwd=tmp_path)
    assert done.returncode == 1
    line = one_error_line(done)
    assert "ZeroDivisionError" in line and "brokenapp.py, line 3)" in line
    logged = error_log.read_text()
    assert "ZeroDivisionError" in logged and "brokenapp.py, line 3)" in logged


# -- python -m wsgi_fcgi.client ---------------------------------------------------

def run_client(*args):
    return subprocess.run([PYTHON, "-m", "wsgi_fcgi.client", *args], env=project_env(), capture_output=True,
                          text=True, timeout=30)


class OneAnswerServer:
    """A FastCGI responder that answers every request with `output` as its
    CGI response (what a broken or hostile app server might send)."""

    def __init__(self, output: bytes) -> None:
        self.output = output
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(20)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            parser = p.RecordParser()
            done = False
            while not done:
                data = conn.recv(65536)
                if not data:
                    return
                done = any(r.type == p.STDIN and not r.content for r in parser.feed(data))
            conn.sendall(p.encode_stream(p.STDOUT, 1, self.output) + p.encode_stdout_end(1))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.mark.parametrize("args, expected", [
    (["-H", "NoColon"], "-H 'NoColon': write 'Name: value'"),
    (["--param", "FOO"], "--param 'FOO': write NAME=VALUE"),
    (["-H", ": empty name"], "-H ': empty name': write 'Name: value'"),
])
def test_client_bad_input_is_one_line_exit_2(args, expected):
    done = run_client("--connect", "127.0.0.1:%d" % free_port(), *args, "/")
    assert done.returncode == 2
    assert done.stderr.strip() == "wsgi_fcgi.client: " + expected


def test_client_sends_non_latin1_input_as_utf8(envapp):
    import json
    done = run_client("--connect", envapp.address, "-H", "X-Name: \u20ac", "--param", "X_CITY=K\u00f8benhavn",
                      "/caf\u00e9?q=\u00fc")
    assert done.returncode == 0, done.stderr
    environ = json.loads(done.stdout)["environ"]
    assert environ["HTTP_X_NAME"] == "\u20ac".encode().decode("latin-1")
    assert environ["X_CITY"] == "K\u00f8benhavn".encode().decode("latin-1")
    assert environ["PATH_INFO"] == "/caf\u00e9".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "q=\u00fc".encode().decode("latin-1")


@pytest.mark.parametrize("status_line", [b"Status: abc", b"Status: ", b"Status: 2000 Too Long"])
def test_client_bad_status_line_in_the_response_exits_1(status_line):
    server = OneAnswerServer(status_line + b"\r\nContent-Type: text/plain\r\n\r\nbody")
    try:
        done = run_client("--connect", server.address, "/")
    finally:
        server.close()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("wsgi_fcgi.client: bad Status line") and done.stderr.count("\n") == 1


SLOW_BOOT_APP = '''
import os, time
MARKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first-worker-done")
if os.path.exists(MARKER):
    time.sleep(30)  # every worker after the first boots slowly: the pool stays booting
open(MARKER, "w").close()

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def children(pid: int) -> set:
    path = "/proc/%d/task/%d/children" % (pid, pid)
    try:
        with open(path) as f:
            return {int(child) for child in f.read().split()}
    except OSError:
        return set()


def test_term_while_spawning_a_big_pool_is_answered_between_forks(tmp_path):
    """The master forks the rest of the pool in one loop once the first worker
    is ready; a TERM arriving during that loop stops it after the next fork."""
    from support import Process, wait_for, worker_answers
    (tmp_path / "slowboot.py").write_text(SLOW_BOOT_APP)
    address = "127.0.0.1:%d" % free_port()
    proc = Process([PYTHON, "-m", "wsgi_fcgi", "--bind", address, "--workers", "300", "--log-level", "debug",
                    "slowboot:app"], tmp_path / "big.log", cwd=tmp_path, env=project_env())
    try:
        wait_for(lambda: proc.proc.poll() is not None or worker_answers(address), 20, what="the first worker")
        wait_for(lambda: len(children(proc.pid)) > 2, 20, interval=0.001, what="the pool's forks to begin")
        proc.send_signal(15)
        started = time.monotonic()
        assert proc.wait(20) == 0, proc.log()[-2000:]
        assert time.monotonic() - started < 10
    finally:
        proc.stop()
    forked = proc.log().count("master: started worker")
    assert forked < 150, "%d workers started after TERM was sent" % forked
