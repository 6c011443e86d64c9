import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

from support import PACKAGE_TREE, Nginx, WsgiFcgi  # noqa: E402

sys.path.insert(0, str(PACKAGE_TREE))  # before the checkout that `python -m pytest` puts first


@pytest.fixture(scope="session")
def searchable_tmp_factory():
    """searchable_tmp_factory(name) -> a new directory that other users (Apache's
    www-data workers) may traverse.  Not in pytest's own temp tree: pytest
    tightens its root back to 0700 whenever a pytest process, an xdist worker
    included, first asks for a temp dir, which cut Apache off mid-test."""
    root = Path(tempfile.mkdtemp(prefix="wsgi-fcgi-tests-"))
    root.chmod(0o711)

    def make(name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=name + "-", dir=root))
        path.chmod(0o711)
        return path

    yield make
    shutil.rmtree(root, ignore_errors=True)


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


@pytest.fixture
def start_site(start_wsgi_fcgi, start_nginx):
    """start_site(conf_name, app, *args, address=None, edit=None) -> (url, server).

    wsgi_fcgi serving `app` (extra CLI `args`) behind a real nginx loaded from
    the shipped config nginx/CONF_NAME; `edit(text) -> text` adds what one
    test needs on top of that file.  `url` is the site's base URL.
    """
    from support import free_port, shipped_nginx_conf

    def start(conf_name, app, *args, address=None, edit=None, **kw):
        server = start_wsgi_fcgi(app, *args, address=address, **kw)
        port = free_port()
        conf = shipped_nginx_conf(conf_name, port, [server.address])
        if edit is not None:
            conf = edit(conf)
        start_nginx(None, conf, port=port)
        return "http://127.0.0.1:%d" % port, server

    return start


@pytest.fixture(scope="module")
def envapp(tmp_path_factory):
    """One tests/apps/envapp.py server for a whole test module."""
    server = WsgiFcgi("envapp:app", tmp_path_factory.mktemp("envapp"))
    yield server
    server.stop()
