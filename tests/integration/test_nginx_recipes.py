"""nginx recipes beyond the basic configs, each loaded from nginx/: the stock
fastcgi_params, fastcgi.conf (SCRIPT_FILENAME), fastcgi_split_path_info
(with a rewrite), and the classic tutorial layout (`location ~ \\.cgi$`,
fastcgi_index); and, from docs/frontends/nginx.md, the buffers it
recommends for large responses and its X-Accel-Redirect location."""

import hashlib
import os
import shutil

import pytest
import requests
from support import (
    LATIN1_CAFE,
    NGINX_PARAMS,
    ROOT,
    Nginx,
    WsgiFcgi,
    environ_of,
    fastcgi_location,
    free_port,
    shipped_nginx_conf,
    wait_for,
)

from wsgi_fcgi import client


def start_recipe(tmp, name, backend, **replace):
    port = free_port()
    text = shipped_nginx_conf(name, port, [backend.address])
    for old, new in replace.items():
        text = text.replace(old, new)
    (tmp / "nginx").mkdir(parents=True, exist_ok=True)
    shutil.copy(NGINX_PARAMS.with_name("fastcgi.conf"), tmp / "nginx" / "fastcgi.conf")
    return Nginx(tmp, None, text, port=port)


def test_stock_fastcgi_params(envapp, tmp_path):
    nginx = Nginx(tmp_path, fastcgi_location(envapp.address))
    try:
        env = environ_of(nginx.url + "/caf%C3%A9/x?q=1", allow_redirects=False)
        assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", LATIN1_CAFE, "q=1")
        assert env["DOCUMENT_URI"] == LATIN1_CAFE and "SCRIPT_FILENAME" not in env
    finally:
        nginx.stop()


@pytest.fixture(scope="module")
def fastcgi_conf_site(envapp, tmp_path_factory):
    nginx = start_recipe(tmp_path_factory.mktemp("recipe-fastcgi-conf"), "wsgi-fcgi-fastcgi-conf.conf", envapp)
    yield nginx
    nginx.stop()


def test_fastcgi_conf_adds_script_filename(fastcgi_conf_site):
    env = environ_of(fastcgi_conf_site.url + "/a/b?x=1", allow_redirects=False)
    assert env["SCRIPT_FILENAME"] == "/var/www/html/a/b"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/a/b", "x=1")


@pytest.fixture(scope="module")
def split_site(envapp, tmp_path_factory):
    nginx = start_recipe(tmp_path_factory.mktemp("recipe-split"), "wsgi-fcgi-split-path-info.conf", envapp)
    yield nginx
    nginx.stop()


@pytest.mark.parametrize("path, path_info", [
    ("/app/", "/"), ("/app/x/y?q=1", "/x/y"), ("/app/caf%C3%A9/x", LATIN1_CAFE), ("/app/a%2525b", "/a%25b"),
])
def test_split_path_info(split_site, path, path_info):
    env = environ_of(split_site.url + path, allow_redirects=False)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", path_info)
    assert env["REQUEST_URI"] == path


def test_split_path_info_follows_a_rewrite(split_site):
    env = environ_of(split_site.url + "/old/page?x=1", allow_redirects=False)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/app", "/page", "x=1")
    assert env["REQUEST_URI"] == "/old/page?x=1"


def test_split_path_info_bare_prefix_redirects(split_site):
    response = requests.get(split_site.url + "/app", timeout=10, allow_redirects=False)
    assert response.status_code == 301 and response.headers["Location"].endswith("/app/")


@pytest.fixture(scope="module")
def classic_site(envapp, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe-classic")
    docroot = tmp / "htdocs"
    docroot.mkdir()
    (docroot / "index.html").write_text("static index\n")
    nginx = start_recipe(tmp, "wsgi-fcgi-classic.conf", envapp, **{"root /var/www/html;": "root %s;" % docroot})
    nginx.docroot = docroot
    yield nginx
    nginx.stop()


def test_classic_cgi_location(classic_site):
    env = environ_of(classic_site.url + "/app.cgi?x=1", allow_redirects=False)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/app.cgi", "x=1")
    assert env["SCRIPT_FILENAME"] == "%s/app.cgi" % classic_site.docroot


def test_classic_fastcgi_index(classic_site):
    env = environ_of(classic_site.url + "/cgi-bin/", allow_redirects=False)
    assert env["SCRIPT_FILENAME"] == "%s/cgi-bin/index.cgi" % classic_site.docroot
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/cgi-bin/")


def test_classic_static_files_stay_with_nginx(classic_site):
    response = requests.get(classic_site.url + "/", timeout=10)
    assert (response.status_code, response.text) == (200, "static index\n")
    assert requests.get(classic_site.url + "/nothing.html", timeout=10).status_code == 404


def test_classic_with_script_name(tmp_path):
    backend = WsgiFcgi("envapp:app", tmp_path, "--script-name", "/app.cgi")
    nginx = start_recipe(tmp_path, "wsgi-fcgi-classic.conf", backend)
    try:
        env = environ_of(nginx.url + "/app.cgi", allow_redirects=False)
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app.cgi", "")
    finally:
        nginx.stop()
        backend.stop()


def documented_large_response_buffers() -> str:
    """The nginx lines of docs/frontends/nginx.md's "Large responses"."""
    section = (ROOT / "docs" / "frontends" / "nginx.md").read_text().split("## Large responses", 1)[1]
    return section.split("```nginx", 1)[1].split("```", 1)[0]


def test_the_documented_buffers_for_large_responses(envapp, tmp_path):
    buffers = documented_large_response_buffers()
    assert "fastcgi_buffers" in buffers and "fastcgi_busy_buffers_size" in buffers
    nginx = Nginx(tmp_path, fastcgi_location(envapp.address, extra=buffers))
    chunks, size = 512, 65536  # 32 MiB, streamed in 64 KiB chunks
    want = hashlib.sha256(b"x" * (chunks * size)).hexdigest()
    try:
        with requests.Session() as session:
            for _ in range(2):
                digest, received = hashlib.sha256(), 0
                with session.get(nginx.url + "/stream?n=%d&size=%d" % (chunks, size), stream=True, timeout=60) as r:
                    assert r.status_code == 200 and r.headers["Content-Length"] == str(chunks * size)
                    for piece in r.iter_content(1 << 20):
                        digest.update(piece)
                        received += len(piece)
                assert received == chunks * size and digest.hexdigest() == want
    finally:
        nginx.stop()


def documented_block(section: str, language: str = "nginx") -> str:
    """The first ```LANGUAGE block of a section of docs/frontends/nginx.md."""
    text = (ROOT / "docs" / "frontends" / "nginx.md").read_text().split("## " + section, 1)[1]
    return text.split("```" + language, 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def accel_site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe-accel")
    files = tmp / "files"
    files.mkdir()
    (files / "report.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (files / "other.bin").write_bytes(b"not this one")
    backend = WsgiFcgi("downloadapp:app", tmp, env={"DOWNLOAD_FILE": str(files / "report.bin")})
    location = documented_block("Downloads the app decides on: X-Accel-Redirect")
    assert "internal;" in location and "alias /srv/app/files/;" in location
    location = location.replace("alias /srv/app/files/;", "alias %s/;" % files)
    nginx = Nginx(tmp, fastcgi_location(backend.address) + location)
    nginx.files = files
    yield nginx
    nginx.stop()
    backend.stop()


def test_x_accel_redirect_has_nginx_send_the_file(accel_site):
    data = (accel_site.files / "report.bin").read_bytes()
    with requests.Session() as session:
        for _ in range(2):  # the kept upstream connection serves the next one too
            r = session.get(accel_site.url + "/accel/report.bin", timeout=30)
            assert r.status_code == 200 and r.content == data
            assert r.headers["Content-Length"] == str(len(data))
            assert r.headers["Content-Disposition"] == "attachment; filename=report.bin"
            assert r.headers["Content-Type"] == "application/octet-stream"  # the app's, kept by nginx
        partial = session.get(accel_site.url + "/accel/report.bin", headers={"Range": "bytes=100-199"}, timeout=30)
        assert partial.status_code == 206 and partial.content == data[100:200]
        cached = session.get(accel_site.url + "/accel/report.bin", timeout=30,
                             headers={"If-Modified-Since": r.headers["Last-Modified"]})
        assert cached.status_code == 304 and cached.content == b""


def test_the_protected_location_is_internal(accel_site):
    assert requests.get(accel_site.url + "/protected/report.bin", timeout=10).status_code == 404
    # a name the app does not vouch for never reaches the header
    assert requests.get(accel_site.url + "/accel/nothing.bin", timeout=10).status_code == 404
    assert requests.get(accel_site.url + "/accel/..%2Ffiles%2Fother.bin", timeout=10).status_code == 404


#: A location passing to wsgi_fcgi with another protocol's directive (a
#: config copied from a uWSGI, SCGI or reverse-proxy setup): what the client
#: gets, and the worker's log line saying which directive to change.
WRONG_PASSES = {
    "proxy_pass": ("proxy_pass http://{address};", 400, "nginx: fastcgi_pass, not proxy_pass"),
    "uwsgi_pass": ("uwsgi_param REQUEST_METHOD $request_method; uwsgi_param PATH_INFO $uri; uwsgi_pass {address};",
                   502, "nginx: fastcgi_pass, not uwsgi_pass"),
    "scgi_pass": ("scgi_param REQUEST_METHOD $request_method; scgi_pass {address};",
                  502, "nginx: fastcgi_pass, not scgi_pass"),
}


@pytest.mark.parametrize("directive", sorted(WRONG_PASSES))
def test_a_location_with_another_protocols_pass_is_named_in_the_log(envapp, tmp_path, directive):
    config, status, hint = WRONG_PASSES[directive]
    nginx = Nginx(tmp_path, "location / { %s }" % config.format(address=envapp.address))
    try:
        for method in ("GET", "POST"):
            response = requests.request(method, nginx.url + "/page", data=b"x" * 1000 if method == "POST" else None,
                                        timeout=10)
            assert response.status_code == status, (method, response.status_code, response.text)
        if directive == "proxy_pass":
            assert response.text == "This address serves FastCGI to a web server, not HTTP.\n"
        wait_for(lambda: hint in envapp.log(), 5, what="the log line naming %s" % directive)
        assert envapp.proc.poll() is None
    finally:
        nginx.stop()
    assert client.request(envapp.address, "GET", "/after").status == 200
