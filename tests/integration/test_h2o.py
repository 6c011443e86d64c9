"""H2O (fastcgi.connect) in front of wsgi_fcgi, from the shipped
deploy/h2o/h2o.conf: the app at the root and under /app (--script-name)."""

import os

import pytest
import requests
from support import LATIN1_CAFE, ROOT, assert_head_then_get, environ_of, free_port

from frontends import H2O

RECIPE = ROOT / "deploy" / "h2o" / "h2o.conf"

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/h2o"), reason="h2o is not installed")


@pytest.fixture
def site(start_wsgi_fcgi, tmp_path):
    root_app = start_wsgi_fcgi("envapp:app")
    prefixed = start_wsgi_fcgi("envapp:app", "--script-name", "/app")
    port = free_port()
    conf = RECIPE.read_text()
    for old, new in (("port: 8080", "port: %d" % port), ("port: 9001", "port: %s" % prefixed.address.rpartition(":")[2]),
                     ("port: 9000", "port: %s" % root_app.address.rpartition(":")[2]),
                     ("/run/h2o.pid", str(tmp_path / "h2o.pid")),
                     ("/var/log/h2o/error.log", str(tmp_path / "h2o" / "error.log"))):
        assert conf.count(old) == 1, old
        conf = conf.replace(old, new)
    server = H2O(tmp_path / "h2o", conf, port)
    yield server
    server.stop()


def test_root_app(site):
    environ = environ_of(site.url + "/caf%C3%A9/x?q=1")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", LATIN1_CAFE)
    assert environ["QUERY_STRING"] == "q=1" and environ["REQUEST_METHOD"] == "GET"
    assert environ["HTTP_HOST"] == "127.0.0.1:%d" % site.port
    body = os.urandom(300_000)
    response = requests.post(site.url + "/upload", data=body, timeout=30)
    assert response.status_code == 200 and response.json()["body_length"] == len(body)


def test_app_under_a_prefix(site):
    environ = environ_of(site.url + "/app/caf%C3%A9/x?q=1")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", LATIN1_CAFE)
    assert environ_of(site.url + "/app")["PATH_INFO"] == ""
    assert environ_of(site.url + "/elsewhere")["SCRIPT_NAME"] == ""  # the root app


def test_prefix_app_gets_h2os_normalised_path(site):
    """H2O routes on the normalised path (dot segments resolved, %2e too)
    and sends that path as PATH_INFO: the app under /app must see the same
    path H2O routed, never one that climbs out of /app."""
    environ = environ_of(site.url + "/app/x/%2e%2e/y")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/y")
    # Normalised to /secret: H2O gives it to the root app, not to /app.
    environ = environ_of(site.url + "/app/%2e%2e/secret")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/secret")


def test_head_then_get_on_one_connection(site):
    assert_head_then_get(site.url + "/x?q=1")
