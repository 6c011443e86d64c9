"""`make demo`: examples/flask_app served by wsgi_fcgi behind nginx.

Starts `python -m wsgi_fcgi` (the Flask example, on a unix socket) and nginx
(nginx/wsgi-fcgi-unix.conf, the config users copy) as children, with all
their files in a temporary directory; prints the URL; serves until Ctrl-C or
SIGTERM; then stops both by PID and removes the directory.

    DEMO_PORT=8081 python scripts/demo.py     # another port than 8080
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLASK_APP = ROOT / "examples" / "flask_app"
SITE_CONF = ROOT / "nginx" / "wsgi-fcgi-unix.conf"
STOCK_PARAMS = Path("/etc/nginx/fastcgi_params")
# The values nginx/wsgi-fcgi-unix.conf documents as the ones to adapt.
SHIPPED_LISTEN = "listen 127.0.0.1:8080;"
SHIPPED_SOCKET = "server unix:/run/wsgi-fcgi/app.sock;"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

NGINX_MAIN_CONF = """\
daemon off;
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log notice;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    client_body_temp_path {tmp}/client_body;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    proxy_temp_path {tmp}/proxy_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    include {tmp}/site.conf;
}}
"""


class DemoError(Exception):
    """Something the user can fix; one line on stderr."""


def demo_port() -> int:
    text = os.environ.get("DEMO_PORT", "8080")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DemoError("DEMO_PORT=%r is not a port number" % text)
    return int(text)


def check_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise DemoError("port %d on 127.0.0.1 is in use (%s); free it or run with DEMO_PORT=<another port>"
                            % (port, exc.strerror)) from None


def find_nginx() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None or not STOCK_PARAMS.exists():
        raise DemoError("nginx is not installed: run `bash scripts/install-system-deps.sh --demo`")
    return nginx


def unprivileged_user(tmp: Path) -> str:
    """As root, nginx's workers run as nobody: give them the directory."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
    return "user nobody %s;" % grp.getgrgid(nobody.pw_gid).gr_name


def write_nginx_conf(tmp: Path, port: int, socket_path: Path) -> Path:
    site = SITE_CONF.read_text()
    for shipped in (SHIPPED_LISTEN, SHIPPED_SOCKET):
        if site.count(shipped) != 1:
            raise DemoError("%s: expected %r once" % (SITE_CONF, shipped))
    site = site.replace(SHIPPED_LISTEN, "listen 127.0.0.1:%d;" % port)
    site = site.replace(SHIPPED_SOCKET, "server unix:%s;" % socket_path)
    (tmp / "site.conf").write_text(site)
    shutil.copy(STOCK_PARAMS, tmp / "fastcgi_params")  # `include fastcgi_params;` is relative to nginx.conf
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_MAIN_CONF.format(tmp=tmp, user=unprivileged_user(tmp)))
    return conf


def start(cmd: list, **popen) -> subprocess.Popen:
    # Its own session: Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen([str(part) for part in cmd], stdin=subprocess.DEVNULL,
                            start_new_session=True, **popen)


def wait_until(ready, children: list, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        for child in children:
            if child.poll() is not None:
                raise DemoError("%s exited with status %s while starting" % (child.args[0], child.returncode))
        if time.monotonic() > deadline:
            raise DemoError("%s did not start within %.0f s" % (what, START_TIMEOUT))
        time.sleep(0.1)


def connects(family: int, address) -> bool:
    with socket.socket(family) as probe:
        probe.settimeout(1)
        try:
            probe.connect(address)
            return True
        except OSError:
            return False


def stop(child: subprocess.Popen, sig: int) -> None:
    if child.poll() is None:
        child.send_signal(sig)
        try:
            child.wait(STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            print("demo: %s (pid %d) did not stop, killing it" % (child.args[0], child.pid), file=sys.stderr)
    try:
        os.killpg(child.pid, signal.SIGKILL)  # its group: nginx's workers, wsgi_fcgi's workers
    except ProcessLookupError:
        pass
    child.wait(STOP_TIMEOUT)


def serve(tmp: Path, port: int, stopping: threading.Event) -> int:
    nginx_binary = find_nginx()
    socket_path = tmp / "wsgi-fcgi.sock"
    conf = write_nginx_conf(tmp, port, socket_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    children = []
    try:
        app = start([sys.executable, "-m", "wsgi_fcgi", "--bind", "unix:%s" % socket_path,
                     "--socket-mode", "0666", "--chdir", FLASK_APP, "--threads", "8", "app:app"], env=env)
        children.append(app)
        wait_until(lambda: connects(socket.AF_UNIX, str(socket_path)), children, "wsgi_fcgi")
        nginx = start([nginx_binary, "-p", tmp, "-c", conf, "-e", tmp / "nginx-error.log"])
        children.append(nginx)
        try:
            wait_until(lambda: connects(socket.AF_INET, ("127.0.0.1", port)), children, "nginx")
        except DemoError:
            sys.stderr.write((tmp / "nginx-error.log").read_text(errors="replace")
                             if (tmp / "nginx-error.log").exists() else "")
            raise
        print("demo: wsgi_fcgi pid %d, nginx pid %d, files in %s" % (app.pid, nginx.pid, tmp), flush=True)
        print("\n    http://127.0.0.1:%d/\n\nCtrl-C to stop." % port, flush=True)
        while not stopping.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    raise DemoError("%s exited with status %s" % (child.args[0], child.returncode))
        print("demo: stopping", flush=True)
        return 0
    finally:
        # nginx first (QUIT: finish the requests in flight), then the app server (TERM: graceful).
        for child, sig in reversed(list(zip(children, (signal.SIGTERM, signal.SIGQUIT), strict=False))):
            stop(child, sig)


def main() -> int:
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    tmp = Path(tempfile.mkdtemp(prefix="wsgi-fcgi-demo-"))
    try:
        port = demo_port()
        check_port_free(port)
        return serve(tmp, port, stopping)
    except DemoError as exc:
        print("demo: %s" % exc, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
