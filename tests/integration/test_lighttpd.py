"""lighttpd mod_fastcgi in front of wsgi_fcgi, with the configs shipped in
frontends/lighttpd/: the app at the root, under a prefix, and as a FastCGI
AUTHORIZER (spec 6.3) guarding static files and a CGI script."""

import shutil
import sys

import pytest
import requests
from support import APPS, WsgiFcgi, assert_head_then_get, environ_of

from frontends import Lighttpd, shipped


@pytest.fixture(scope="module")
def root_site(envapp, tmp_path_factory):
    lighttpd = Lighttpd(tmp_path_factory.mktemp("lighttpd-root"),
                        shipped("lighttpd/wsgi_fcgi.conf", envapp.address))
    yield lighttpd
    lighttpd.stop()


@pytest.mark.parametrize("path, path_info, query", [
    ("/", "/", ""),
    ("/a/b?x=1&y=2", "/a/b", "x=1&y=2"),
    ("/caf%C3%A9/x", "/café/x".encode().decode("latin-1"), ""),
    ("/a%2525b", "/a%25b", ""),
])
def test_root_app_gets_the_whole_path(root_site, path, path_info, query):
    env = environ_of(root_site.url + path)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", path_info, query)
    assert env["SERVER_SOFTWARE"].startswith("lighttpd/")  # RFC 3875 4.1.17: the web server's name
    assert env["SERVER_PORT"] == str(root_site.port)


def test_root_app_post_body(root_site):
    data = b"k=v&" * 50000
    response = requests.post(root_site.url + "/form", data=data, timeout=10)
    assert response.json()["body_length"] == len(data)
    assert response.json()["environ"]["REQUEST_METHOD"] == "POST"


@pytest.fixture(scope="module")
def prefix_site(tmp_path_factory):
    """The prefix config, with the backend told its mount point (--script-name)."""
    tmp = tmp_path_factory.mktemp("lighttpd-prefix")
    backend = WsgiFcgi("envapp:app", tmp, "--script-name", "/app")
    lighttpd = Lighttpd(tmp / "lighttpd", shipped("lighttpd/wsgi_fcgi-prefix.conf", backend.address))
    yield lighttpd
    lighttpd.stop()
    backend.stop()


@pytest.mark.parametrize("path, script_name, path_info", [
    ("/app/x/y", "/app", "/x/y"),
    ("/app/", "/app", "/"),
    ("/app", "/app", ""),
])
def test_prefix_app(prefix_site, path, script_name, path_info):
    env = environ_of(prefix_site.url + path)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)


def test_prefix_split_by_lighttpd_alone(root_site, envapp, tmp_path):
    """Without --script-name, lighttpd's own SCRIPT_NAME/PATH_INFO split stands."""
    lighttpd = Lighttpd(tmp_path, shipped("lighttpd/wsgi_fcgi-prefix.conf", envapp.address))
    try:
        env = environ_of(lighttpd.url + "/app/x/y")
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x/y")
        assert requests.get(lighttpd.url + "/elsewhere", timeout=10).status_code == 404
    finally:
        lighttpd.stop()


@pytest.fixture(scope="module")
def guarded_site(tmp_path_factory):
    """authorizer.conf over a docroot with a file and a CGI script (mod_cgi)
    that shows the environment the next handler gets."""
    tmp = tmp_path_factory.mktemp("lighttpd-auth")
    backend = WsgiFcgi("authapp:app", tmp)
    docroot = tmp / "lighttpd" / "htdocs"
    (docroot / "private").mkdir(parents=True)
    (docroot / "private" / "file.txt").write_text("the secret file\n")
    shutil.copy(APPS / "cgi_env.py", docroot / "private" / "env.py")
    site = shipped("lighttpd/authorizer.conf", backend.address, **{"/var/www/html": str(docroot)})
    site += '\nserver.modules += ("mod_cgi")\ncgi.assign = (".py" => "%s")\n' % sys.executable
    lighttpd = Lighttpd(tmp / "lighttpd", site)
    yield lighttpd
    lighttpd.stop()
    backend.stop()


def test_authorizer_lets_through_with_variables(guarded_site):
    good = {"Authorization": "Bearer good"}
    response = requests.get(guarded_site.url + "/private/file.txt", headers=good, timeout=10)
    assert (response.status_code, response.text) == (200, "the secret file\n")
    env = requests.get(guarded_site.url + "/private/env.py?q=1", headers=good, timeout=10).json()
    assert (env["USER"], env["ROLE"], env["CHECKED_URI"]) == ("alice", "admin", "/private/env.py?q=1")
    assert env["FCGI_ROLE_SEEN"] == "AUTHORIZER"  # the app ran in the AUTHORIZER role (spec 6.3)


@pytest.mark.parametrize("headers, status, body", [
    ({}, 401, "who are you?\n"),
    ({"Authorization": "Bearer wrong"}, 401, "who are you?\n"),
    ({"Authorization": "Bearer forbidden"}, 403, "forbidden by the authorizer\n"),
])
def test_authorizer_refusal_reaches_the_client(guarded_site, headers, status, body):
    for path in ("/private/file.txt", "/private/env.py"):
        response = requests.get(guarded_site.url + path, headers=headers, timeout=10)
        assert (response.status_code, response.text) == (status, body)
        if status == 401:
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="test"'


def test_head_then_get_on_one_connection(root_site):
    assert_head_then_get(root_site.url + "/x?q=1")
