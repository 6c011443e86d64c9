"""spawn-fcgi starting wsgi_fcgi on an inherited listening socket (fd 0,
FCGI_LISTENSOCK_FILENO, spec 2.2): in the foreground, as 4 forked daemons
sharing one socket, and on a unix socket; queried with the project's client
and with libfcgi's cgi-fcgi."""

import concurrent.futures
import json
import os
import signal
import subprocess

from support import PYTHON, Process, can_connect, free_port, project_env, wait_for

from wsgi_fcgi import client

SPAWN_FCGI = "/usr/bin/spawn-fcgi"
APP = ["--", PYTHON, "-m", "wsgi_fcgi", "envapp:app"]


def environ_via_client(address, target="/x/y?q=1"):
    response = client.request(address, "GET", target, timeout=10)
    assert response.status == 200, response
    return json.loads(response.body)


def start_foreground(tmp_path, *spawn_args):
    """`spawn-fcgi -n`: spawn-fcgi binds, then execs the app in its place."""
    proc = Process([SPAWN_FCGI, "-n", *spawn_args, *APP], tmp_path / "spawn-fcgi.log",
                   env=project_env(), cwd=tmp_path)
    return proc


def test_foreground_tcp(tmp_path):
    address = "127.0.0.1:%d" % free_port()
    proc = start_foreground(tmp_path, "-a", "127.0.0.1", "-p", address.rpartition(":")[2])
    try:
        wait_for(lambda: can_connect(address), 20, what="spawn-fcgi app on " + address)
        result = environ_via_client(address)
        assert (result["environ"]["SCRIPT_NAME"], result["environ"]["PATH_INFO"]) == ("", "/x/y")
        with open("/proc/%d/comm" % proc.pid) as comm:  # spawn-fcgi exec'd the app: our master's short name
            assert comm.read().strip() == "wsgi-fcgi"
    finally:
        assert proc.stop() == 0, proc.log()


def test_cgi_fcgi_as_client(tmp_path):
    """libfcgi's cgi-fcgi: CGI environment in, CGI response out."""
    address = "127.0.0.1:%d" % free_port()
    proc = start_foreground(tmp_path, "-a", "127.0.0.1", "-p", address.rpartition(":")[2])
    try:
        wait_for(lambda: can_connect(address), 20, what="spawn-fcgi app on " + address)
        body = b"a=1&b=2"
        env = {"PATH": "/usr/bin:/bin", "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/form",
               "REQUEST_URI": "/form?z=9", "QUERY_STRING": "z=9", "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "SERVER_NAME": "example.test",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "example.test"}
        done = subprocess.run(["/usr/bin/cgi-fcgi", "-bind", "-connect", address], input=body, env=env,
                              capture_output=True, timeout=30)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        assert b"Status: 200 OK" in head, done
        result = json.loads(payload)
        assert result["body_length"] == len(body)
        assert result["environ"]["PATH_INFO"] == "/form"
        assert result["environ"]["QUERY_STRING"] == "z=9"
    finally:
        proc.stop()


def test_unix_socket(tmp_path):
    path = tmp_path / "app.sock"
    proc = start_foreground(tmp_path, "-s", str(path), "-M", "0600")
    try:
        wait_for(lambda: can_connect("unix:%s" % path), 20, what="spawn-fcgi app on " + str(path))
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert environ_via_client("unix:%s" % path)["environ"]["PATH_INFO"] == "/x/y"
    finally:
        assert proc.stop() == 0, proc.log()


def parent_of(pid):
    with open("/proc/%d/stat" % pid) as stat:
        return int(stat.read().split(")")[-1].split()[1])


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_four_forked_children_share_the_socket(tmp_path):
    """Without -n spawn-fcgi forks the children, which detach, and exits;
    their pids are in the -P file and they are stopped by pid."""
    port = free_port()
    address = "127.0.0.1:%d" % port
    pid_file = tmp_path / "spawn.pid"
    done = subprocess.run([SPAWN_FCGI, "-a", "127.0.0.1", "-p", str(port), "-F", "4", "-P", str(pid_file), *APP],
                          env=project_env(), cwd=tmp_path, capture_output=True, text=True, timeout=30)
    pids = [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []
    try:
        assert done.returncode == 0, done
        assert len(pids) == 4 and done.stdout.count("child spawned successfully") == 4, done
        wait_for(lambda: can_connect(address), 20, what="spawned children on " + address)

        # one listening socket, inherited by all four as fd 0
        assert len({os.readlink("/proc/%d/fd/0" % pid) for pid in pids}) == 1
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            served_by = set(pool.map(lambda i: environ_via_client(address, "/?i=%d" % i)["pid"], range(40)))
        assert all(pid in pids or parent_of(pid) in pids for pid in served_by), (served_by, pids)
        # stop all but one: the last still answers on the shared socket
        for pid in pids[:-1]:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda pid=pid: not alive(pid), 20, what="child %d to stop" % pid)
            assert environ_via_client(address)["environ"]["PATH_INFO"] == "/x/y"
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(alive(pid) for pid in pids), 20, what="spawned children to stop")
    assert not can_connect(address)
