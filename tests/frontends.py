"""Real web servers in front of wsgi_fcgi: lighttpd, Apache httpd (also
with mod_fcgid), HAProxy, Caddy and H2O, each run in the foreground from a
config written to a temp dir, on a free loopback port, stopped by PID.

The shipped configs in frontends/ are the part a user adds to their own
server config; `shipped()` reads one and points it at the test's backend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from support import ROOT, Process, can_connect, free_port, wait_for

FRONTENDS = ROOT / "frontends"
#: The backend address written in the shipped configs.
SHIPPED_HOST, SHIPPED_PORT = "127.0.0.1", 9000


def shipped(relative: str, backend: str, **replace: str) -> str:
    """A shipped config with its 127.0.0.1:9000 backend replaced by `backend`
    (HOST:PORT) and each `replace` key replaced by its value."""
    text = (FRONTENDS / relative).read_text()
    host, _, port = backend.rpartition(":")
    text = text.replace("%s:%d" % (SHIPPED_HOST, SHIPPED_PORT), backend)
    text = text.replace('"host" => "%s"' % SHIPPED_HOST, '"host" => "%s"' % host)
    text = text.replace('"port" => %d' % SHIPPED_PORT, '"port" => %s' % port)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


class WebServer(Process):
    """A web server in the foreground, answering on 127.0.0.1:`port`."""

    name = "web server"

    def __init__(self, tmp: Path, cmd, port: int, env: dict | None = None) -> None:
        self.tmp = tmp
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        super().__init__(cmd, tmp / (self.name + ".log"), cwd=tmp, env=env)
        self.await_start(self._wait_ready)

    def _wait_ready(self) -> None:
        wait_for(lambda: self.proc.poll() is not None or can_connect("127.0.0.1:%d" % self.port),
                 20, what=self.name)
        if self.proc.poll() is not None:
            raise RuntimeError("%s exited with %s:\n%s\n%s" % (self.name, self.proc.returncode,
                                                               self.log(), self.error_log()))

    def error_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


LIGHTTPD_TEMPLATE = """
server.document-root = "{tmp}/htdocs"
server.port = {port}
server.bind = "127.0.0.1"
server.pid-file = "{tmp}/lighttpd.pid"
server.errorlog = "{tmp}/error.log"
server.upload-dirs = ("{tmp}")
server.username = ""
server.groupname = ""
{site}
"""


class Lighttpd(WebServer):
    name = "lighttpd"

    def __init__(self, tmp: Path, site: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "htdocs").mkdir(exist_ok=True)
        port = free_port()
        conf = tmp / "lighttpd.conf"
        conf.write_text(LIGHTTPD_TEMPLATE.format(tmp=tmp, port=port, site=site))
        super().__init__(tmp, ["/usr/sbin/lighttpd", "-D", "-f", conf], port)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0):
        return super().stop(sig, timeout)


APACHE_TEMPLATE = """
ServerRoot "{tmp}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{tmp}/apache2.pid"
ErrorLog "{tmp}/error.log"
LogLevel warn
DocumentRoot "{tmp}/htdocs"
Mutex file:{tmp} default
DefaultRuntimeDir "{tmp}"
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_fcgi_module {modules}/mod_proxy_fcgi.so
LoadModule setenvif_module {modules}/mod_setenvif.so
LoadModule env_module {modules}/mod_env.so
LoadModule rewrite_module {modules}/mod_rewrite.so
{extra_modules}
<Directory />
    AllowOverride None
    Require all granted
</Directory>
{site}
"""


def _check_others_can_search(path: Path) -> None:
    """Apache's workers run as www-data and must reach DocumentRoot."""
    for directory in (path, *path.parents):
        if not os.stat(directory).st_mode & 0o001:
            raise RuntimeError("Apache's workers cannot traverse %s: give Apache a directory from the "
                               "searchable_tmp_factory fixture" % directory)


class Apache(WebServer):
    name = "apache2"

    def __init__(self, tmp: Path, site: str, modules=()) -> None:
        """`modules`: more modules to load, e.g. ("mime", "fcgid")."""
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "htdocs").mkdir(exist_ok=True)
        port = free_port()
        user = ""
        if os.geteuid() == 0:  # Apache refuses to run its workers as root
            user = "User www-data\nGroup www-data"
        conf = tmp / "apache2.conf"
        extra = "\n".join("LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so" % (m, m) for m in modules)
        conf.write_text(APACHE_TEMPLATE.format(tmp=tmp, port=port, user=user, site=site, extra_modules=extra,
                                               modules="/usr/lib/apache2/modules"))
        if os.geteuid() == 0:
            _check_others_can_search(tmp)
        super().__init__(tmp, ["/usr/sbin/apache2", "-f", conf, "-DFOREGROUND"], port,
                         env={"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C"})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0):
        return super().stop(sig, timeout)


class Haproxy(WebServer):
    name = "haproxy"

    def __init__(self, tmp: Path, conf_text: str, port: int) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        conf = tmp / "haproxy.cfg"
        conf.write_text(conf_text)
        super().__init__(tmp, ["/usr/sbin/haproxy", "-db", "-f", conf], port)

    def error_log(self) -> str:
        return self.log()


class Caddy(WebServer):
    """Caddy from a Caddyfile, run as JSON with config autosave off
    (Caddy 2.6's Caddyfile has no option for that)."""

    name = "caddy"

    def __init__(self, tmp: Path, caddyfile: str, port: int) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "Caddyfile").write_text(caddyfile)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp),
               "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config")}
        adapted = subprocess.run(["/usr/bin/caddy", "adapt", "--config", tmp / "Caddyfile"],
                                 capture_output=True, text=True, env=env, timeout=30)
        if adapted.returncode:
            raise RuntimeError("caddy adapt failed:\n" + adapted.stderr)
        config = json.loads(adapted.stdout)
        config.setdefault("admin", {})["config"] = {"persist": False}
        conf = tmp / "caddy.json"
        conf.write_text(json.dumps(config, indent=1))
        super().__init__(tmp, ["/usr/bin/caddy", "run", "--config", conf], port, env=env)

    def error_log(self) -> str:
        return self.log()


class H2O(WebServer):
    """H2O from a config text (YAML) listening on 127.0.0.1:`port`, its pid
    file and error log in `tmp`; as root it keeps root (our temp dirs are
    0700), as nginx does in these tests."""

    name = "h2o"

    def __init__(self, tmp: Path, conf_text: str, port: int) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        conf = tmp / "h2o.conf"
        conf.write_text(("user: root\n" if os.geteuid() == 0 else "") + conf_text)
        super().__init__(tmp, ["/usr/bin/h2o", "--conf", conf], port)
