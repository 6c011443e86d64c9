"""USR2: a new master from the same command line on the same listening
sockets (inherited, never bound again); the old master drains and exits
once the new one's workers are ready; the pid file follows.  Clients keep
going throughout: keep-alive POSTs through nginx (the shipped config) and
FastCGI requests on a new connection each, straight to the socket."""

import os
import signal
import socket
import time

from support import FastCGILoad, PostLoop, children_of, process_gone, read_pid, wait_children, wait_for


def test_usr2_starts_a_new_master_and_the_old_one_drains(start_site, tmp_path):
    pid_file = tmp_path / "master.pid"
    url, server = start_site("wsgi-fcgi-tcp.conf", "masterapp:app", "--workers", "2", "--pid", str(pid_file))
    old_workers = wait_children(server.pid, 2)
    assert read_pid(pid_file) == server.pid
    posts = PostLoop(url + "/pid")
    fresh = FastCGILoad(server.address, 2, path="/pid", ramp=0)
    time.sleep(1)
    server.send_signal(signal.SIGUSR2)
    new_master = wait_for(lambda: read_pid(pid_file) not in (None, server.pid) and read_pid(pid_file), 30,
                          interval=0.05, what="the new master's pid file")
    try:
        assert read_pid(tmp_path / "master.pid.oldbin") == server.pid  # until the old one exits
        assert server.wait(30) == 0  # the old master drained and exited by itself
        new_workers = wait_children(new_master, 2)
        time.sleep(1)
        posts.stop()
        fresh.stop()
        assert not posts.failures, posts.failures[:5]
        assert not fresh.failures, fresh.failures[:5]
        served_by = {int(body) for body in posts.bodies}
        assert served_by & old_workers and served_by & new_workers
        assert not new_workers & old_workers and not children_of(server.pid)
        assert not (tmp_path / "master.pid.oldbin").exists()
        assert read_pid(pid_file) == new_master
        log = server.log()  # both masters write to it
        assert "SIGUSR2, started the new master %d" % new_master in log
        assert "asking the old master %d to drain" % server.pid in log
        assert "cannot listen" not in log and "Traceback" not in log
    finally:
        os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: process_gone(new_master), 20, interval=0.1, what="the new master stopped")
    assert not pid_file.exists()


def test_usr2_with_an_app_that_no_longer_loads_keeps_the_old_master(start_wsgi_fcgi, tmp_path):
    app = tmp_path / "upgradeapp.py"
    app.write_text("def app(environ, start_response):\n"
                   "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [b'v1']\n")
    pid_file = tmp_path / "master.pid"
    server = start_wsgi_fcgi("upgradeapp:app", "--pid", str(pid_file), cwd=tmp_path,
                             env={"PYTHONDONTWRITEBYTECODE": "1"})
    from wsgi_fcgi import client
    assert client.request(server.address, "GET", "/").body == b"v1"
    app.write_text("raise ImportError('broken on purpose')\n")
    server.send_signal(signal.SIGUSR2)
    wait_for(lambda: "before it was ready; this one goes on" in server.log(), 30, interval=0.1,
             what="the failed upgrade")
    assert read_pid(pid_file) == server.pid and not (tmp_path / "master.pid.oldbin").exists()
    assert client.request(server.address, "GET", "/").body == b"v1"
    assert server.proc.poll() is None


def test_usr2_on_a_unix_socket_keeps_the_socket_file(start_wsgi_fcgi, tmp_path):
    path = tmp_path / "app.sock"
    pid_file = tmp_path / "master.pid"
    server = start_wsgi_fcgi("masterapp:app", "--pid", str(pid_file), address="unix:%s" % path)
    inode = path.stat().st_ino
    fresh = FastCGILoad(server.address, 2, path="/pid", ramp=0)
    server.send_signal(signal.SIGUSR2)
    new_master = wait_for(lambda: read_pid(pid_file) not in (None, server.pid) and read_pid(pid_file), 30,
                          interval=0.05, what="the new master's pid file")
    try:
        assert server.wait(30) == 0
        wait_children(new_master, 1)
        time.sleep(0.5)
        fresh.stop()
        assert not fresh.failures, fresh.failures[:5]
        assert fresh.ok > 10
        assert path.stat().st_ino == inode  # the same socket file: not unlinked, not bound again
    finally:
        os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: process_gone(new_master), 20, interval=0.1, what="the new master stopped")


def test_usr2_tells_systemd_the_new_main_pid_and_never_stopping(start_wsgi_fcgi, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    pid_file = tmp_path / "master.pid"
    server = start_wsgi_fcgi("masterapp:app", "--pid", str(pid_file),
                             env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    server.send_signal(signal.SIGUSR2)
    new_master = wait_for(lambda: read_pid(pid_file) not in (None, server.pid) and read_pid(pid_file), 30,
                          interval=0.05, what="the new master's pid file")
    messages = []
    try:
        assert server.wait(30) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # all of them: until the new READY came and then a quiet 0.2 s
            try:
                text = notify.recv(4096).decode()
            except TimeoutError:
                if any(m.get("MAINPID") == str(new_master) for m in messages):
                    break
                continue
            messages.append(dict(line.split("=", 1) for line in text.splitlines() if "=" in line))
    finally:
        notify.close()
        os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: process_gone(new_master), 20, interval=0.1, what="the new master stopped")
    assert any(m.get("READY") == "1" and m.get("MAINPID") == str(server.pid) for m in messages), messages
    assert any(m.get("READY") == "1" and m.get("MAINPID") == str(new_master) for m in messages), messages
    assert not any("STOPPING" in m for m in messages), messages  # the service never stopped
