"""Caddy's reverse_proxy with `transport fastcgi` in front of wsgi_fcgi,
with the Caddyfiles shipped in frontends/caddy/ (admin API off, HTTP only on
a loopback port, config autosave off)."""

import hashlib
import json

import pytest
import requests
from support import LATIN1_CAFE, assert_head_then_get, environ_of, free_port

from frontends import Caddy, shipped

SHIPPED_SITE = "127.0.0.1:8080"


def start_caddy(tmp, name, backend):
    port = free_port()
    return Caddy(tmp, shipped("caddy/" + name, backend.address, **{SHIPPED_SITE: "127.0.0.1:%d" % port}), port)


@pytest.fixture(scope="module")
def root_site(envapp, tmp_path_factory):
    caddy = start_caddy(tmp_path_factory.mktemp("caddy-root"), "Caddyfile", envapp)
    yield caddy
    caddy.stop()


@pytest.fixture(scope="module")
def split_site(envapp, tmp_path_factory):
    caddy = start_caddy(tmp_path_factory.mktemp("caddy-split"), "Caddyfile-split-path", envapp)
    yield caddy
    caddy.stop()


@pytest.mark.parametrize("path, path_info", [
    ("/", "/"), ("/x/y?q=1", "/x/y"), ("/caf%C3%A9/x", LATIN1_CAFE), ("/a%2525b", "/a%25b"),
    ("/app.py/x", "/app.py/x"),
])
def test_root_site(root_site, path, path_info):
    env = environ_of(root_site.url + path)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", path_info)
    assert env["QUERY_STRING"] == path.partition("?")[2]
    assert env["HTTP_X_FORWARDED_PROTO"] == "http"


def test_root_site_post(root_site):
    data = b"\x00\xff" * 150000
    result = requests.post(root_site.url + "/upload", data=data, timeout=10).json()
    assert result["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_loopback_only_no_admin_no_autosave(root_site):
    config = json.loads((root_site.tmp / "caddy.json").read_text())
    assert config["admin"] == {"disabled": True, "config": {"persist": False}}
    server, = config["apps"]["http"]["servers"].values()
    assert server["listen"] == ["127.0.0.1:%d" % root_site.port]
    assert not list((root_site.tmp / "config").rglob("autosave.json"))


@pytest.mark.parametrize("path, path_info", [
    ("/app.py/x/y?q=1", "/x/y"), ("/app.py/", "/"), ("/app.py/caf%C3%A9/x", LATIN1_CAFE),
    ("/app.py/a%2525b", "/a%25b"),
])
def test_split_path(split_site, path, path_info):
    env = environ_of(split_site.url + path)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app.py", path_info)
    assert env["DOCUMENT_URI"] == "/app.py"


def test_split_path_other_paths_are_not_proxied(split_site):
    response = requests.get(split_site.url + "/other", timeout=10)
    assert "environ" not in response.text


def test_head_then_get_on_one_connection(root_site):
    assert_head_then_get(root_site.url + "/x?q=1")
