"""Apache httpd mod_proxy_fcgi in front of wsgi_fcgi, with the configs
shipped in frontends/apache/: ProxyPass and SetHandler, PATH_INFO and the
proxy-fcgi-pathinfo setting."""

import pytest
import requests
from support import LATIN1_CAFE, WsgiFcgi, assert_head_then_get, environ_of

from frontends import Apache, shipped


@pytest.fixture(scope="module")
def proxypass(tmp_path_factory, searchable_tmp_factory):
    backend = WsgiFcgi("envapp:app", tmp_path_factory.mktemp("apache-proxypass"), "--script-name", "/app")
    apache = Apache(searchable_tmp_factory("apache-proxypass"),
                    shipped("apache/wsgi_fcgi-proxypass.conf", backend.address))
    yield apache
    apache.stop()
    backend.stop()


@pytest.fixture(scope="module")
def sethandler(envapp, searchable_tmp_factory):
    apache = Apache(searchable_tmp_factory("apache-sethandler"),
                    shipped("apache/wsgi_fcgi-sethandler.conf", envapp.address))
    yield apache
    apache.stop()


PATHS = [
    ("/app/", "/"),
    ("/app/x/y?q=1", "/x/y"),
    ("/app/caf%C3%A9/x", LATIN1_CAFE),
    ("/app/a%2525b", "/a%25b"),
]


@pytest.mark.parametrize("path, path_info", PATHS)
def test_proxypass(proxypass, path, path_info):
    env = environ_of(proxypass.url + path)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", path_info)
    assert env["QUERY_STRING"] == path.partition("?")[2]
    assert env["REQUEST_URI"] == path


def test_proxypass_outside_the_prefix_is_apache_404(proxypass):
    assert requests.get(proxypass.url + "/apple", timeout=10).status_code == 404


def test_proxypass_post_and_connection_reuse(proxypass):
    with requests.Session() as session:
        for size in (0, 1, 70000, 300000):
            data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            result = session.post(proxypass.url + "/app/upload", data=data, timeout=10).json()
            assert result["body_length"] == size
            assert result["environ"]["CONTENT_LENGTH"] == str(size)


@pytest.mark.parametrize("path, path_info", PATHS)
def test_sethandler_keeps_apaches_split(sethandler, path, path_info):
    env = environ_of(sethandler.url + path)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", path_info)
    assert env["SCRIPT_FILENAME"].startswith("proxy:fcgi://")


@pytest.mark.parametrize("value", ["full", "first-dot", "last-dot"])
def test_sethandler_with_proxy_fcgi_pathinfo(envapp, searchable_tmp_factory, value):
    """These values leave Apache's split as it is: same environ."""
    site = shipped("apache/wsgi_fcgi-sethandler.conf", envapp.address, **{
        '<Location "/app">': '<Location "/app">\n    SetEnv proxy-fcgi-pathinfo %s' % value})
    apache = Apache(searchable_tmp_factory("apache"), site)
    try:
        env = environ_of(apache.url + "/app/x/y")
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x/y")
    finally:
        apache.stop()


def test_proxypass_with_proxy_fcgi_pathinfo_unescape(tmp_path, searchable_tmp_factory):
    """ProxyPass with proxy-fcgi-pathinfo: the path still splits at --script-name."""
    backend = WsgiFcgi("envapp:app", tmp_path, "--script-name", "/app")
    site = "SetEnv proxy-fcgi-pathinfo unescape\n" + shipped("apache/wsgi_fcgi-proxypass.conf", backend.address)
    apache = Apache(searchable_tmp_factory("apache"), site)
    try:
        env = environ_of(apache.url + "/app/caf%C3%A9/x")
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", LATIN1_CAFE)
    finally:
        apache.stop()
        backend.stop()


def test_head_then_get_on_one_connection(proxypass):
    assert_head_then_get(proxypass.url + "/app/x?q=1")
