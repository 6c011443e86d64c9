"""Files sent through wsgi.file_wrapper, as Flask's send_file and Django's
FileResponse send them (tests/apps/downloadapp.py): whole and exact behind
a real nginx, Range requests included, and a regular file sent in blocks
of 256 KiB whatever block size the framework suggests."""

import hashlib
import os

import pytest
import requests
from support import FcgiConnection, WsgiFcgi

from wsgi_fcgi import protocol as p

SIZE = 5 * 1024 * 1024 + 123


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    path = tmp_path_factory.mktemp("downloads") / "blob.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, blob):
    proc = WsgiFcgi("downloadapp:app", tmp_path_factory.mktemp("download-server"), "--threads", "4",
                    env={"DOWNLOAD_FILE": str(blob)})
    yield proc
    proc.stop()


@pytest.mark.parametrize("route", ["/flask", "/django", "/pipe"])
def test_a_download_through_nginx_is_whole(start_site, blob, route):
    url, server = start_site("wsgi-fcgi-tcp.conf", "downloadapp:app", env={"DOWNLOAD_FILE": str(blob)})
    with requests.Session() as session:  # kept connections: nginx reuses its upstream one too
        for _ in range(3):
            r = session.get(url + route, timeout=30)
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == SIZE
            assert hashlib.sha256(r.content).digest() == hashlib.sha256(blob.read_bytes()).digest()
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("route", ["/flask", "/django"])
def test_a_head_of_a_download_sends_no_body(start_site, server, blob, route):
    # RFC 3875 4.3.3: no body for HEAD; the web server drops one anyway, so
    # sending it only read the whole file for nothing.
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, route, method="HEAD")
        response = conn.wait_ended(1)[1]
        assert response.status == 200 and int(response.header("Content-Length")) == SIZE
        assert response.body == b""
    url, _ = start_site("wsgi-fcgi-tcp.conf", "downloadapp:app", env={"DOWNLOAD_FILE": str(blob)})
    with requests.Session() as session:  # and the kept connection serves on
        for method in ("HEAD", "GET", "HEAD"):
            r = session.request(method, url + route, timeout=30)
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == SIZE
            assert len(r.content) == (SIZE if method == "GET" else 0)


def test_a_range_of_a_download_through_nginx(start_site, blob):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "downloadapp:app", env={"DOWNLOAD_FILE": str(blob)})
    r = requests.get(url + "/flask", headers={"Range": "bytes=1000-3000000"}, timeout=30)
    assert r.status_code == 206
    assert r.content == blob.read_bytes()[1000:3000001]


@pytest.mark.parametrize("route", ["/flask", "/django"])
def test_a_regular_file_goes_out_in_full_records(server, blob, route):
    """Django suggests 4 KiB blocks and Flask 8 KiB: a record and a write
    each (1282 and 642 records for this file).  A regular file is read in
    blocks of 256 KiB: four full records and one of 4 bytes."""
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, route)
        response = conn.wait_ended(1)[1]
        assert len(response.body) == SIZE and response.body == blob.read_bytes()
        content = [len(r.content) for r in conn.records if r.type == p.STDOUT and r.content]
        assert len(content) <= SIZE // p.MAX_CONTENT_LEN + SIZE // (1 << 18) + 3  # the head, 4 bytes a block, the last
        assert content.count(p.MAX_CONTENT_LEN) >= SIZE // p.MAX_CONTENT_LEN - 1


def test_a_pipe_keeps_the_suggested_blocks(server, blob):
    """A pipe's read of a larger block would wait for data that could go out
    already: its blocks stay the 4 KiB the app asked for."""
    with FcgiConnection(server.address) as conn:
        conn.send_request(1, "/pipe")
        response = conn.wait_ended(1)[1]
        assert response.body == blob.read_bytes()
        content = [len(r.content) for r in conn.records if r.type == p.STDOUT and r.content]
        assert max(content) <= 4096 + 200  # the first record carries the head too
