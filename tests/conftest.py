import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

from support import Nginx, WsgiFcgi  # noqa: E402


@pytest.fixture
def start_wsgi_fcgi(tmp_path):
    """start_wsgi_fcgi(app, *args, **kw) -> WsgiFcgi; stopped after the test."""
    started = []

    def start(app, *args, **kw):
        kw.setdefault("log_name", "wsgi_fcgi-%d.log" % len(started))
        proc = WsgiFcgi(app, tmp_path, *args, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_nginx(tmp_path):
    """start_nginx(server_conf, http_conf="") -> Nginx; stopped after the test."""
    started = []

    def start(server_conf, http_conf="", **kw):
        proc = Nginx(tmp_path / ("n%d" % len(started)), server_conf, http_conf, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
