"""tests/apps/envapp.py behind a real nginx loaded from the shipped configs in
nginx/: what the app sees of paths, queries and bodies, uploads and
downloads, statuses, errors, concurrency, and several backends."""

import concurrent.futures
import hashlib
import json
import os
import re
import socket
import subprocess
import time

import pytest
import requests
from support import free_port, read_until_eof, shipped_nginx_conf, wait_for

from wsgi_fcgi import client


def environ_of(response):
    assert response.status_code == 200, response.text
    return response.json()["environ"]


def wsgi_str(text):
    """A str as PEP 3333 puts it in environ: its UTF-8 bytes as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def rss_kib(pid):
    status = open("/proc/%d/status" % pid).read()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def test_paths_are_decoded_exactly_once(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    cases = {"/caf%C3%A9": wsgi_str("/café"), "/a%20b": "/a b", "/a%2525b": "/a%25b",
             "/x%2Fy/%E2%9C%93": wsgi_str("/x/y/✓"), "/plus+sign": "/plus+sign"}
    for raw, path_info in cases.items():
        env = environ_of(requests.get(url + raw, timeout=10))
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", path_info), raw
        assert env["REQUEST_URI"] == raw


def test_paths_under_a_prefix(start_site):
    url, _ = start_site("wsgi-fcgi-prefix.conf", "envapp:app", "--script-name", "/app")
    for raw, path_info in {"/app/": "/", "/app/caf%C3%A9": wsgi_str("/café"), "/app/a%2525b": "/a%25b"}.items():
        env = environ_of(requests.get(url + raw, timeout=10))
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", path_info), raw


def test_query_strings_reach_the_app_as_sent(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    for query in ["a=1&a=2&a=3", "q=caf%C3%A9&q=%E2%9C%93&empty=&flag", "x=%2525&y=a+b%20c&z=%26%3D"]:
        assert environ_of(requests.get(url + "/q?" + query, timeout=10))["QUERY_STRING"] == query


def test_form_json_and_multipart_bodies(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    form = requests.post(url + "/form", data={"name": "Zoë", "tags": ["a", "b"]}, timeout=10)
    payload = requests.post(url + "/json", json={"k": ["v", 1]}, timeout=10)
    upload = requests.post(url + "/upload", files={"file": ("big.bin", os.urandom(4 * 1024 * 1024))},
                           timeout=60)
    for response, content_type in [(form, "application/x-www-form-urlencoded"),
                                   (payload, "application/json"), (upload, "multipart/form-data; boundary=")]:
        sent = response.request.body if isinstance(response.request.body, bytes) \
            else response.request.body.encode()
        data = response.json()
        assert data["environ"]["REQUEST_METHOD"] == "POST"
        assert data["environ"]["CONTENT_TYPE"].startswith(content_type)
        assert data["environ"]["CONTENT_LENGTH"] == str(len(sent))
        assert (data["body_length"], data["body_sha256"]) == (len(sent), hashlib.sha256(sent).hexdigest())


def test_chunked_upload_is_streamed_without_content_length(start_site):
    url, _ = start_site("wsgi-fcgi-uploads.conf", "envapp:app")
    pieces = [os.urandom(100_000) for _ in range(30)]

    def body():
        yield from pieces  # a generator body: requests sends Transfer-Encoding: chunked

    r = requests.post(url + "/chunked", data=body(), timeout=60)
    data = r.json()
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert data["environ"].get("CONTENT_LENGTH", "") == ""
    whole = b"".join(pieces)
    assert (data["body_length"], data["body_sha256"]) == (len(whole), hashlib.sha256(whole).hexdigest())


def test_several_set_cookie_headers_stay_separate(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    r = requests.get(url + "/cookies", timeout=10)
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/", "c=3; HttpOnly"]
    assert r.cookies.get("a") == "1" and r.cookies.get("c") == "3"
    # and two Cookie lines from the client reach the app joined with "; "
    env = environ_of(requests.get(url + "/", headers={"Cookie": "a=1; b=2"}, timeout=10))
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_204_and_304_have_no_body(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    session = requests.Session()  # one keep-alive connection: a stray body byte would break the next answer
    for _ in range(2):
        for status in (204, 304):
            r = session.get(url + "/status/%d" % status, timeout=10)
            assert r.status_code == status and r.content == b""
        assert environ_of(session.get(url + "/after", timeout=10))["PATH_INFO"] == "/after"


def test_50_mib_download_is_streamed_not_buffered(start_site):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    requests.get(url + "/stream?n=16&size=65536", timeout=10).raise_for_status()  # warm up
    worker_pid = requests.get(url + "/", timeout=10).json()["pid"]  # the process running the app
    rss_before = rss_kib(worker_pid)
    chunks, size = 800, 65536  # 50 MiB
    digest, received = hashlib.sha256(), 0
    with requests.get(url + "/stream?n=%d&size=%d" % (chunks, size), stream=True, timeout=60) as r:
        assert r.status_code == 200 and r.headers["Content-Length"] == str(chunks * size)
        for piece in r.iter_content(256 * 1024):
            digest.update(piece)
            received += len(piece)
            if received < 30 * size:
                time.sleep(0.001)  # a slowish reader at first: backpressure, not buffering
    assert received == chunks * size
    assert digest.hexdigest() == hashlib.sha256(b"x" * (chunks * size)).hexdigest()
    assert requests.get(url + "/", timeout=10).json()["pid"] == worker_pid
    grown_mib = (rss_kib(worker_pid) - rss_before) / 1024
    assert grown_mib < 15, "RSS grew by %.1f MiB for a 50 MiB download" % grown_mib


def test_app_exception_before_headers_is_a_clean_500(start_site):
    url, server = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    r = requests.get(url + "/raise", timeout=10)
    assert r.status_code == 500
    assert "secret-token-123" not in r.text and "Traceback" not in r.text
    wait_for(lambda: "secret-token-123" in server.log(), 10, what="the traceback in the server's log")
    assert "Traceback" in server.log() and "RuntimeError" in server.log()
    assert environ_of(requests.get(url + "/next", timeout=10))["PATH_INFO"] == "/next"


def test_app_exception_after_headers_cuts_the_response_and_serving_goes_on(start_site):
    # The client must see that the body is cut: nginx gets no END_REQUEST,
    # so it ends the chunked response without its last chunk.
    url, server = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    session = requests.Session()
    for _ in range(3):
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session.get(url + "/raise-after", timeout=10)
        assert environ_of(session.get(url + "/next", timeout=10))["PATH_INFO"] == "/next"
    with socket.create_connection(("127.0.0.1", int(url.rpartition(":")[2])), timeout=10) as sock:
        sock.sendall(b"GET /raise-after HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = read_until_eof(sock)
    assert raw.startswith(b"HTTP/1.1 200") and b"first chunk" in raw
    assert not raw.endswith(b"\r\n0\r\n\r\n")  # no final chunk: a cut body, not a short one
    wait_for(lambda: server.log().count("boom after headers") >= 3, 10, what="the errors in the log")


def test_the_declared_content_length_ends_the_response(start_site, tmp_path):
    # PEP 3333: no more than Content-Length goes out, and the chunk that
    # completes it ends the request, before the rest of the app's iterable
    # runs (here a second of it).  The kept connection to nginx carries
    # the next requests.
    url, server = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    session = requests.Session()
    for _ in range(3):
        r = session.get(url + "/overlong", timeout=10)
        assert (r.status_code, r.text) == (200, "12345")
        assert environ_of(session.get(url + "/next", timeout=10))["PATH_INFO"] == "/next"
    tail = tmp_path / "tail"
    started = time.monotonic()
    r = session.get(url + "/tail", params={"s": "1.5", "file": str(tail)}, timeout=10)
    assert r.text == "done" and time.monotonic() - started < 1.2
    assert environ_of(session.get(url + "/next", timeout=10))["PATH_INFO"] == "/next"
    assert not tail.exists()
    wait_for(tail.exists, 10, what="the app's iterable run to its end")
    assert tail.read_text() == "tail ran"
    wait_for(lambda: "more than the Content-Length" in server.log(), 10, what="the warning")
    assert server.log().count("more than the Content-Length") == 3
    assert "Traceback" not in server.log()


def test_invalid_header_value_is_refused_with_500(start_site):
    url, server = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    r = requests.get(url + "/bad-header", timeout=10)
    assert r.status_code == 500
    assert "Injected" not in r.headers and "should not be sent" not in r.text
    wait_for(lambda: "X-Bad" in server.log(), 10, what="the refused header in the log")


def established_to(port):
    out = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True, timeout=10).stdout
    return len(out.splitlines())


def test_64_concurrent_keepalive_connections_with_4_threads(start_site):
    url, server = start_site("wsgi-fcgi-tcp.conf", "envapp:app", "--threads", "4")
    server_port = int(server.address.rpartition(":")[2])
    clients = 64

    def fetch(index):
        with requests.Session() as session:  # each client its own keep-alive connection to nginx
            answers = [session.get(url + "/sleep?s=0.2&i=%d" % index, timeout=60) for _ in range(2)]
        return [(r.status_code, r.text) for r in answers]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(fetch, range(clients)))
    elapsed = time.monotonic() - started
    assert results == [[(200, "slept")] * 2] * clients
    # 128 requests of 0.2 s on 4 threads take 6.4 s at best; generous on a shared box.
    assert elapsed < 45
    # nginx opened many upstream connections and keeps them (keepalive 64): all
    # idle now, none holding one of the 4 threads.
    idle = established_to(server_port)
    assert 16 < idle <= 64, idle
    assert environ_of(requests.get(url + "/after", timeout=10))["PATH_INFO"] == "/after"


def test_multi_backend_config_spreads_load_and_skips_a_dead_backend(start_wsgi_fcgi, start_nginx):
    backends = [start_wsgi_fcgi("envapp:app") for _ in range(3)]
    port = free_port()
    start_nginx(None, shipped_nginx_conf("wsgi-fcgi-multi.conf", port, [b.address for b in backends]), port=port)
    url = "http://127.0.0.1:%d" % port
    # Each backend's app process (a worker under its master), asked directly.
    pids = [json.loads(client.request(b.address, "GET", "/", timeout=10).body)["pid"] for b in backends]
    assert len(set(pids)) == 3
    seen = {requests.get(url + "/", timeout=10).json()["pid"] for _ in range(12)}
    assert seen == set(pids)
    backends[1].stop()
    answers = [requests.get(url + "/", timeout=10) for _ in range(12)]
    assert all(r.status_code == 200 for r in answers)
    assert {r.json()["pid"] for r in answers} == {pids[0], pids[2]}
