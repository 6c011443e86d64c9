"""examples/flask_app behind a real nginx, loaded from the configs in nginx/
that users copy: routing and url_for at the root and under a prefix, the
form, the JSON API, the upload and the streamed response."""

import hashlib
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from support import PYTHON, ROOT, Process, can_connect, free_port, project_env, wait_for
from urllib3 import encode_multipart_formdata

FLASK_APP = ROOT / "examples" / "flask_app"


@pytest.fixture
def flask_site(start_site):
    """flask_site(conf_name, *wsgi_fcgi_args, address=None, edit=None) -> base URL."""

    def start(conf_name, *args, **kw):
        return start_site(conf_name, "app:app", "--chdir", str(FLASK_APP), *args, **kw)[0]

    return start


def link_status(href):
    """The status of a link from a page (headers only: the streamed page takes its time)."""
    with requests.get(href.replace("&amp;", "&"), stream=True, timeout=10) as r:
        return r.status_code


def test_pages_link_with_url_for_at_the_root(flask_site):
    url = flask_site("wsgi-fcgi-tcp.conf")
    r = requests.get(url + "/", timeout=10)
    assert r.status_code == 200
    assert 'href="/guestbook"' in r.text and 'href="/hello/caf%C3%A9"' in r.text
    for link in re.findall(r'href="([^"]+)"', r.text):
        assert link_status(url + link) == 200, link


def test_pages_link_with_url_for_under_a_prefix(flask_site):
    url = flask_site("wsgi-fcgi-prefix.conf", "--script-name", "/app")
    r = requests.get(url + "/app/", timeout=10)
    assert r.status_code == 200
    assert 'href="/app/guestbook"' in r.text and "Mounted at <code>/app</code>" in r.text
    links = re.findall(r'href="([^"]+)"', r.text)
    assert links and all(link.startswith("/app/") for link in links)
    for link in links:
        assert link_status(url + link) == 200, link
    # nginx's own answers around the mount point
    assert requests.get(url + "/app", allow_redirects=False, timeout=10).headers["Location"].endswith("/app/")
    assert requests.get(url + "/guestbook", timeout=10).status_code == 404


@pytest.mark.parametrize("conf_name, prefix", [("wsgi-fcgi-tcp.conf", ""), ("wsgi-fcgi-prefix.conf", "/app")])
def test_percent_encoded_paths_route_and_round_trip(flask_site, conf_name, prefix):
    url = flask_site(conf_name, *(["--script-name", prefix] if prefix else []))
    cases = {"caf%C3%A9": "café", "a%20b": "a b", "a%2525b": "a%25b", "%E2%9C%93/x%2Fy": "✓/x/y"}
    for encoded, name in cases.items():
        r = requests.get("%s%s/hello/%s?q=1&q=2&u=%%C3%%BC" % (url, prefix, encoded), timeout=10)
        assert r.status_code == 200, encoded
        data = r.json()
        assert data["name"] == name
        assert data["script_root"] == prefix
        assert data["path"] == "/hello/" + name
        assert data["args"] == {"q": ["1", "2"], "u": ["ü"]}
        # url_for builds the URL the client used (werkzeug quotes / as is).
        assert data["url"] == prefix + "/hello/" + encoded.replace("%2F", "/")


def test_form_post_redirects_and_shows_the_message(flask_site):
    url = flask_site("wsgi-fcgi-tcp.conf")
    session = requests.Session()
    r = session.post(url + "/guestbook", data={"author": "Zoë", "message": "hello & <bye>"},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"] == "/guestbook"
    page = session.get(url + r.headers["Location"], timeout=10)
    assert "<strong>Zoë</strong>: hello &amp; &lt;bye&gt;" in page.text


def test_json_api_creates_and_lists_over_the_unix_socket_config(flask_site, tmp_path):
    url = flask_site("wsgi-fcgi-unix.conf", address="unix:%s" % (tmp_path / "app.sock"))
    assert requests.get(url + "/api/items", timeout=10).json() == {"items": []}
    r = requests.post(url + "/api/items", json={"name": "thé", "tags": ["a", "b"]}, timeout=10)
    assert r.status_code == 201
    item = r.json()
    assert item["name"] == "thé" and r.headers["Location"] == "/api/items/%d" % item["id"]
    assert requests.get(url + r.headers["Location"], timeout=10).json() == item
    assert requests.get(url + "/api/items", timeout=10).json() == {"items": [item]}
    assert requests.post(url + "/api/items", data="not json", timeout=10).status_code == 400
    assert requests.get(url + "/api/items/999", timeout=10).status_code == 404


def test_upload_reports_size_and_sha256(flask_site):
    url = flask_site("wsgi-fcgi-tcp.conf")
    data = os.urandom(3 * 1024 * 1024 + 17)
    r = requests.post(url + "/upload", files={"file": ("blob.bin", data)}, timeout=30)
    assert r.status_code == 200
    assert r.json() == {"filename": "blob.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_streamed_response_arrives_in_pieces(flask_site):
    url = flask_site("wsgi-fcgi-tcp.conf")
    with requests.get(url + "/stream?lines=5&delay=0.4", stream=True, timeout=10) as r:
        assert r.status_code == 200
        lines = r.iter_lines(chunk_size=1)
        assert next(lines) == b"line 1 of 5 for 127.0.0.1"
        first_arrived = time.monotonic()
        rest = list(lines)
        # The app takes 0.4 s per line: had anything collected the answer,
        # all lines would arrive at once.
        assert time.monotonic() - first_arrived > 1.0
    assert rest == [b"line %d of 5 for 127.0.0.1" % n for n in range(2, 6)]


@pytest.mark.parametrize("conf_name", ["wsgi-fcgi-uploads.conf", "wsgi-fcgi-tcp.conf"])
def test_chunked_upload(flask_site, conf_name):
    """Streamed by nginx (uploads config): no CONTENT_LENGTH.  Buffered by
    nginx (TCP config): CONTENT_LENGTH, but HTTP_TRANSFER_ENCODING "chunked"
    too, which makes werkzeug ignore the length.  Either way Flask reads the
    body to its end only because wsgi_fcgi sets wsgi.input_terminated."""
    url = flask_site(conf_name)
    data = os.urandom(2 * 1024 * 1024 + 5)
    body, content_type = encode_multipart_formdata({"file": ("chunked.bin", data)})

    def pieces():
        for start in range(0, len(body), 256 * 1024):
            yield body[start:start + 256 * 1024]

    r = requests.post(url + "/upload", data=pieces(), headers={"Content-Type": content_type}, timeout=60)
    assert r.request.headers["Transfer-Encoding"] == "chunked"
    assert r.json() == {"filename": "chunked.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_https_param_gives_https_urls(flask_site):
    """TLS ended in front of nginx (or in nginx): `fastcgi_param HTTPS on`."""
    def https_on(conf):
        return conf.replace("fastcgi_keep_conn on;", "fastcgi_keep_conn on;\n        fastcgi_param HTTPS on;", 1)

    url = flask_site("wsgi-fcgi-tcp.conf", edit=https_on)
    data = requests.get(url + "/hello/caf%C3%A9", timeout=10).json()
    # The shipped configs keep the browser's port in HTTP_HOST (see nginx/wsgi-fcgi-tcp.conf).
    assert data["external_url"] == url.replace("http:", "https:") + "/hello/caf%C3%A9"
    plain = flask_site("wsgi-fcgi-tcp.conf")
    assert requests.get(plain + "/hello/x", timeout=10).json()["external_url"] == plain + "/hello/x"


def demo_process(tmp_path, port):
    return Process([PYTHON, ROOT / "scripts" / "demo.py"], tmp_path / "demo.log", cwd=ROOT,
                   env=project_env({"DEMO_PORT": str(port)}))


def test_make_demo_serves_the_example_and_cleans_up_on_ctrl_c(tmp_path):
    port = free_port()
    demo = demo_process(tmp_path, port)
    try:
        url = "http://127.0.0.1:%d/" % port
        wait_for(lambda: demo.proc.poll() is not None or url in demo.log(), 30, what="the demo's URL")
        assert demo.proc.poll() is None, demo.log()
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and 'href="/guestbook"' in page.text
        found = re.search(r"wsgi_fcgi pid (\d+), nginx pid (\d+), files in (\S+)", demo.log())
        assert found, demo.log()
        children, files = [int(found.group(1)), int(found.group(2))], Path(found.group(3))
        assert files.is_dir()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 0, demo.log()
    finally:
        demo.stop()
    for pid in children:
        assert not Path("/proc/%d" % pid).exists(), "child %d still running" % pid
    assert not files.exists()
    assert not can_connect("127.0.0.1:%d" % port)


def test_make_demo_says_clearly_when_its_port_is_busy(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = demo_process(tmp_path, port)
        try:
            code = demo.wait(30)
        finally:
            demo.stop()
    assert code == 1
    assert "port %d on 127.0.0.1 is in use" % port in demo.log()
    assert "DEMO_PORT" in demo.log() and "Traceback" not in demo.log()
