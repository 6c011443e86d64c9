"""systemd, played by the test: socket activation (systemd-socket-activate,
or a parent holding the socket like a .socket unit) and a NOTIFY_SOCKET
datagram listener receiving sd_notify's READY/RELOADING/STOPPING/STATUS."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import APPS, PYTHON, ROOT, Process, project_env, wait_for, worker_answers

from wsgi_fcgi import client

SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"
UNITS = ROOT / "deploy" / "systemd"


class NotifyListener:
    """systemd's NOTIFY_SOCKET: a datagram socket collecting state messages."""

    def __init__(self, tmp: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "wsgi-fcgi-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(tmp / "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages: list = []

    def _drain(self) -> None:
        while True:
            try:
                self.messages.append(dict(line.split("=", 1) for line in
                                          self.sock.recv(4096).decode().splitlines() if "=" in line))
            except TimeoutError:
                return

    def wait_for(self, key: str, timeout: float = 20.0) -> dict:
        """The first message not yet returned that has `key`=1."""
        def found():
            self._drain()
            for i, message in enumerate(self.messages):
                if message.get(key) == "1":
                    del self.messages[:i + 1]
                    return message
            return None
        return wait_for(found, timeout, interval=0.01, what="%s=1 on NOTIFY_SOCKET" % key)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_listener(tmp_path):
    listeners = []

    def make(abstract=False):
        listeners.append(NotifyListener(tmp_path, abstract))
        return listeners[-1]
    yield make
    for listener in listeners:
        listener.close()


def test_socket_activation_and_notify(tmp_path, notify_listener):
    """systemd-socket-activate passes the socket (LISTEN_FDS=1, fd 3), no --bind:
    READY=1 once a worker serves, RELOADING=1 then READY=1 at HUP, STOPPING=1
    at TERM, and the socket file, systemd's, is still there afterwards."""
    notify = notify_listener(abstract=True)
    path = tmp_path / "app.sock"
    proc = Process([SOCKET_ACTIVATE, "-l", path, "-E", "NOTIFY_SOCKET=" + notify.address,
                    PYTHON, "-m", "wsgi_fcgi", "--workers", "2", "envapp:app"],
                   tmp_path / "activated.log", cwd=APPS, env=project_env())
    try:
        wait_for(path.exists, 10, what="systemd-socket-activate's socket")
        response = client.request("unix:%s" % path, "GET", "/activated", timeout=20)  # starts the service
        assert response.status == 200, (response, proc.log())
        ready = notify.wait_for("READY")
        assert int(ready["MAINPID"]) == proc.pid  # exec'd: the master is that process
        assert "worker(s)" in ready["STATUS"]
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING")
        assert abs(int(reloading["MONOTONIC_USEC"]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30e6
        notify.wait_for("READY")
        assert client.request("unix:%s" % path, "GET", "/after-reload", timeout=10).status == 200
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING")
        assert proc.wait(20) == 0, proc.log()
    finally:
        proc.stop()
    assert path.is_socket(), "the inherited socket file was removed:\n" + proc.log()
    assert "Traceback" not in proc.log()


def test_no_master_notifies_too(tmp_path, notify_listener):
    notify = notify_listener()
    path = tmp_path / "single.sock"
    proc = Process([SOCKET_ACTIVATE, "-l", path, "-E", "NOTIFY_SOCKET=" + notify.address,
                    PYTHON, "-m", "wsgi_fcgi", "--no-master", "envapp:app"],
                   tmp_path / "single.log", cwd=APPS, env=project_env())
    try:
        wait_for(path.exists, 10, what="systemd-socket-activate's socket")
        assert client.request("unix:%s" % path, "GET", "/", timeout=20).status == 200, proc.log()
        assert int(notify.wait_for("READY")["MAINPID"]) == proc.pid
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING")
        assert proc.wait(20) == 0, proc.log()
    finally:
        proc.stop()
    assert path.is_socket()


def start_like_a_socket_unit(listener: socket.socket, tmp_path: Path, name: str, *args: str) -> Process:
    """As systemd starts a service of a .socket unit: the socket on fd 3,
    LISTEN_FDS=1 and LISTEN_PID set to the service's own pid."""
    return Process(socket_unit_exec(listener, PYTHON, "-m", "wsgi_fcgi", *args, "envapp:app"),
                   tmp_path / (name + ".log"), cwd=APPS, env=project_env(), pass_fds=[listener.fileno()])


#: what systemd does between fork and exec: the socket to fd 3, LISTEN_PID=getpid()
_EXEC_AS_SYSTEMD = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
                    "os.environ['LISTEN_FDS'] = '1'; os.execv(sys.argv[2], sys.argv[2:])")


def socket_unit_exec(listener: socket.socket, *argv: str) -> list:
    return [PYTHON, "-c", _EXEC_AS_SYSTEMD, str(listener.fileno()), *argv]


def test_restarted_service_keeps_the_socket_units_socket(tmp_path):
    """The socket unit's socket file outlives a stop of the service (no 502
    until `systemctl restart wsgi-fcgi.socket`): the next start answers."""
    path = str(tmp_path / "unit.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    try:
        for run in range(2):
            proc = start_like_a_socket_unit(listener, tmp_path, "run%d" % run, "--no-master" if run else "-w1")
            try:
                response = client.request("unix:" + path, "GET", "/run%d" % run, timeout=20)
                assert response.status == 200, proc.log()
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0, proc.log()
            finally:
                proc.stop()
            assert os.path.exists(path), "run %d removed the socket unit's file:\n%s" % (run, proc.log())
    finally:
        listener.close()


def test_explicit_fd_bind_is_not_unlinked_but_own_socket_is(tmp_path):
    held = socket.socket(socket.AF_UNIX)
    held.bind(str(tmp_path / "held.sock"))
    held.listen(8)
    own = tmp_path / "own.sock"
    try:
        proc = Process([PYTHON, "-m", "wsgi_fcgi", "--bind", "fd://%d" % held.fileno(), "--bind",
                        "unix:%s" % own, "envapp:app"], tmp_path / "fd.log", cwd=APPS, env=project_env(),
                       pass_fds=[held.fileno()])
        try:
            wait_for(lambda: proc.proc.poll() is not None or worker_answers("unix:%s" % own), 20, what="wsgi_fcgi")
            assert client.request("unix:%s" % own, timeout=20).status == 200, proc.log()
            assert client.request("unix:%s" % (tmp_path / "held.sock"), timeout=20).status == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, proc.log()
        finally:
            proc.stop()
        assert (tmp_path / "held.sock").is_socket()
        assert not own.exists(), "a socket it bound itself is removed at exit"
    finally:
        held.close()


def test_listen_pid_of_another_process_is_ignored(tmp_path):
    """LISTEN_FDS meant for a parent (LISTEN_PID differs) is not ours."""
    proc = Process([PYTHON, "-m", "wsgi_fcgi", "--check-config", "envapp:app"], tmp_path / "check.log", cwd=APPS,
                   env=project_env({"LISTEN_FDS": "1", "LISTEN_PID": "1"}))
    assert proc.wait(20) == 0, proc.log()
    proc.stop()
    from wsgi_fcgi.systemd import listen_fds
    environ = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "a:b"}
    assert listen_fds(environ) == [3, 4] and environ == {}
    assert listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": "1"}) == []


def shipped_units(tmp_path: Path, socket_path: Path) -> tuple:
    """deploy/systemd's units with only the machine-specific paths replaced."""
    socket_unit = (UNITS / "wsgi-fcgi.socket").read_text().replace("/run/wsgi-fcgi.sock", str(socket_path))
    service = (UNITS / "wsgi-fcgi.service").read_text()
    service = service.replace("/srv/myapp/venv/bin/wsgi-fcgi", str(Path(PYTHON).parent / "wsgi-fcgi"))
    (tmp_path / "wsgi-fcgi.socket").write_text(socket_unit)
    (tmp_path / "wsgi-fcgi.service").write_text(service)
    return tmp_path / "wsgi-fcgi.socket", tmp_path / "wsgi-fcgi.service"


def exec_start(service_text: str) -> list:
    line = re.search(r"^ExecStart=(.*?)(?<!\\)$", service_text, re.M | re.S).group(1)
    return line.replace("\\\n", " ").split()


def test_shipped_unit_pair_verifies_and_its_command_line_runs(tmp_path):
    socket_unit, service = shipped_units(tmp_path, tmp_path / "run" / "wsgi-fcgi.sock")
    if shutil.which("systemd-analyze"):
        result = subprocess.run(["systemd-analyze", "verify", str(socket_unit), str(service)],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if "wsgi-fcgi" in line and "/srv/myapp" not in line]
        assert not problems, result.stdout + result.stderr
    text = service.read_text()
    for needed in ("Type=notify", "LogsDirectory=wsgi-fcgi", "RuntimeDirectory=wsgi-fcgi", "User=wsgi-fcgi",
                   "NoNewPrivileges=yes", "ProtectSystem=strict", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert needed in text
    assert "--bind" not in text, "the socket comes from the .socket unit"
    # Its command line, with the directories systemd would create, under a socket
    # like the unit's: it must start (config file, logs, pid) and answer.
    argv = exec_start(text)
    site = tmp_path / "srv"
    (site / "current").mkdir(parents=True)
    (site / "current" / "myapp.py").write_text((APPS / "envapp.py").read_text())
    config = tmp_path / "myapp.toml"
    config.write_text('workers = 2\nthreads = 4\n')
    replace = {"/etc/wsgi-fcgi/myapp.toml": str(config), "/srv/myapp": str(site),
               "/run/wsgi-fcgi": str(tmp_path / "run"), "/var/log/wsgi-fcgi": str(tmp_path / "log")}
    for directory in ("run", "log"):
        (tmp_path / directory).mkdir(exist_ok=True)
    args = []
    for arg in argv[1:]:
        for old, new in replace.items():
            arg = arg.replace(old, new)
        args.append(arg)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "run" / "wsgi-fcgi.sock"))
    listener.listen(64)
    proc = Process(socket_unit_exec(listener, argv[0], *args), tmp_path / "unit.log", cwd=site,
                   env=project_env(), pass_fds=[listener.fileno()])
    try:
        response = client.request("unix:%s" % (tmp_path / "run" / "wsgi-fcgi.sock"), timeout=20)
        assert response.status == 200, proc.log()
        wait_for(lambda: (tmp_path / "log" / "access.log").stat().st_size > 0, 10, what="access log line")
        assert (tmp_path / "run" / "master.pid").read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.stop()
        listener.close()
    assert "2 worker(s) x 4 threads" in (tmp_path / "log" / "error.log").read_text()  # the config file's
