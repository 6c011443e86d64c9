"""Differential test: the same tricky raw HTTP requests go to werkzeug's own
development server and to nginx (the shipped TCP config) + wsgi_fcgi, both
running tests/apps/envapp.py.  The app must see the same method, path,
query, headers and body through both.

The differences, each turned into an expectation by `through_nginx()`:
* CONTENT_TYPE / CONTENT_LENGTH: the stock fastcgi_params always send
  `$content_type` / `$content_length`, empty when the request has none
  (PEP 3333 allows empty or absent); werkzeug leaves them out.
* HTTP_HOST: each server is asked on its own port, and the shipped config
  passes the host with the port the client used (Debian's fastcgi_params
  end with `fastcgi_param HTTP_HOST $host;`, without it; the shipped config
  sends it again with the port, and the last value wins).
* Trailing whitespace of a header value: nginx strips it (RFC 9110 5.5: it is
  not part of the value); werkzeug (http.server) keeps it.
* A header sent on several lines: nginx passes each line as its own param and
  wsgi_fcgi joins them with ", " (Cookie with "; ", RFC 6265 5.4), as
  docs/environ.md says; werkzeug joins with ",".
* A chunked request body: nginx reads it whole and sends CONTENT_LENGTH
  (and still HTTP_TRANSFER_ENCODING "chunked", so werkzeug ignores the length
  and relies on wsgi.input_terminated, which wsgi_fcgi sets); werkzeug's
  server passes the body on as it comes, without a length.
* A path starting with "//": werkzeug collapses the leading slashes (so that
  "//host/x" cannot be read as a host); wsgi_fcgi passes the path as sent.
What does not differ, although nginx changes it: nginx's merge_slashes and
dot-segment normalisation change `$uri` (SCRIPT_NAME and DOCUMENT_URI in the
stock params) but not REQUEST_URI, which wsgi_fcgi takes the path from, so
the app sees "/a/./b/../c" as werkzeug's app does (test_nginx_normalises_
only_its_own_view checks that nginx did normalise); header names with
underscores are dropped by both nginx (underscores_in_headers off) and
werkzeug.  Nothing else may differ.
"""

import json
import socket
import threading

import envapp
import pytest
from support import free_port
from werkzeug.serving import make_server

CHUNKED = "Transfer-Encoding: chunked"

# (name, request line, header lines, body)
CASES = [
    ("utf8 path", "GET /caf%C3%A9/%E2%9C%93 HTTP/1.1", [], b""),
    ("space", "GET /a%20b/c%20 HTTP/1.1", [], b""),
    ("encoded percent", "GET /a%2525b HTTP/1.1", [], b""),
    ("encoded slash", "GET /x%2Fy/z HTTP/1.1", [], b""),
    ("reserved chars", "GET /p;x=1/%3B%3F%23/~user/+plus+/!$&'()*,= HTTP/1.1", [], b""),
    ("lowercase escapes", "GET /%c3%a9%2f HTTP/1.1", [], b""),
    ("repeated query keys", "GET /q?a=1&a=2&a=&b=%E2%9C%93&c+d=e+f&flag&a=%2525 HTTP/1.1", [], b""),
    ("empty query", "GET /q? HTTP/1.1", [], b""),
    ("query with slashes and ?", "GET /q?next=/a/b?c=d&x=%3F HTTP/1.1", [], b""),
    ("odd headers", "GET /h HTTP/1.1",
     ["X-Lower-CASE:   spaced value  ", "X-Empty:", "X-Utf8: caf\xc3\xa9", "X-Tab: a\tb",
      "Accept-Language: fr-CH, fr;q=0.9", "X-Long: " + "v" * 3000], b""),
    ("form post", "POST /form HTTP/1.1", ["Content-Type: application/x-www-form-urlencoded"],
     b"name=Zo%C3%AB&tags=a&tags=b"),
    ("json put", "PUT /json/1 HTTP/1.1", ["Content-Type: application/json; charset=utf-8"],
     json.dumps({"k": ["v", 1, "\u2713"]}).encode()),
    ("binary patch", "PATCH /bin HTTP/1.1", ["Content-Type: application/octet-stream"],
     bytes(range(256)) * 300),
    ("delete with body", "DELETE /items/7 HTTP/1.1", ["Content-Type: text/plain"], b"why: because"),
    ("chunked body", "POST /chunked HTTP/1.1", ["Content-Type: application/octet-stream", CHUNKED],
     bytes(range(256)) * 1000),
    ("custom method", "PURGE /cache/x HTTP/1.1", [], b""),
    ("double slashes", "GET //a//b/ HTTP/1.1", [], b""),
    ("dot segments", "GET /a/./b/../c/%2E%2E/d HTTP/1.1", [], b""),
    ("underscore header", "GET /u HTTP/1.1", ["X_Under: 1", "X-Dash: 2"], b""),
    ("repeated headers", "GET /r HTTP/1.1", ["X-Multi: a", "X-Multi: b", "Cookie: a=1", "Cookie: b=2"], b""),
    ("absolute form", "GET http://127.0.0.1/abs/p%20q?x=1 HTTP/1.1", [], b""),
    ("options", "OPTIONS /anything HTTP/1.1", [], b""),
]


def http_exchange(port, request_line, headers, body):
    """One raw HTTP/1.1 request (sent byte for byte as given); the app's JSON."""
    head = [request_line, "Host: 127.0.0.1:%d" % port, "Connection: close", *headers]
    if CHUNKED in headers:
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7000]), body[i:i + 7000])
                        for i in range(0, len(body), 7000)) + b"0\r\n\r\n"
    elif body:
        head.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        received = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, payload = bytes(received).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert b" 200 " in status_line, (request_line, bytes(received[:500]))
    return json.loads(payload)


@pytest.fixture(scope="module")
def werkzeug_port():
    server = make_server("127.0.0.1", free_port(), envapp.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(10)
    server.server_close()


SEEN = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH")


def what_the_app_saw(answer):
    env = answer["environ"]
    seen = {key: env.get(key) for key in SEEN}
    seen.update((key, value) for key, value in env.items() if key.startswith("HTTP_"))
    seen["body"] = (answer["body_length"], answer["body_sha256"])
    return seen


def through_nginx(direct, request_line, headers, nginx_port):
    """What the app should see behind nginx, given what it saw under werkzeug
    (the differences of the module docstring, one by one)."""
    expected = dict(direct)
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if expected[key] is None:
            expected[key] = ""
    names = [line.partition(":")[0] for line in headers]
    for key, value in direct.items():
        if key.startswith("HTTP_"):
            expected[key] = value.rstrip(" \t")
    for name in set(names):
        if names.count(name) > 1:  # werkzeug joined the lines with ","
            key = "HTTP_" + name.upper().replace("-", "_")
            expected[key] = ("; " if key == "HTTP_COOKIE" else ", ").join(direct[key].split(","))
    expected["HTTP_HOST"] = "%s:%d" % (direct["HTTP_HOST"].partition(":")[0], nginx_port)
    if CHUNKED in headers:
        # nginx reads a chunked body whole (fastcgi_request_buffering on, the
        # default) and sends its length, yet passes the header on too.
        expected["CONTENT_LENGTH"] = str(direct["body"][0])
    target = request_line.split(" ")[1]
    if target.startswith("//"):
        expected["PATH_INFO"] = target.partition("?")[0]
    return expected


def test_same_request_same_environ(start_site, werkzeug_port):
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    nginx_port = int(url.rpartition(":")[2])
    differences = []
    for name, request_line, headers, body in CASES:
        direct = what_the_app_saw(http_exchange(werkzeug_port, request_line, headers, body))
        bridged = what_the_app_saw(http_exchange(nginx_port, request_line, headers, body))
        expected = through_nginx(direct, request_line, headers, nginx_port)
        for key in sorted(set(expected) | set(bridged)):
            if expected.get(key) != bridged.get(key):
                differences.append("%s: %s: werkzeug %r (expected %r), nginx + wsgi_fcgi %r"
                                   % (name, key, direct.get(key), expected.get(key), bridged.get(key)))
    assert not differences, "\n".join(differences)


def test_nginx_normalises_only_its_own_view(start_site, werkzeug_port):
    """nginx did merge the slashes and resolve the dot segments (in $uri, sent
    as DOCUMENT_URI), and the app still sees the path as the client sent it."""
    url, _ = start_site("wsgi-fcgi-tcp.conf", "envapp:app")
    nginx_port = int(url.rpartition(":")[2])
    for target, normalised in [("/a//b///c", "/a/b/c"), ("/a/./b/../c/%2E%2E/d", "/a/d")]:
        request_line = "GET %s HTTP/1.1" % target
        env = http_exchange(nginx_port, request_line, [], b"")["environ"]
        assert env["DOCUMENT_URI"] == normalised
        assert env["PATH_INFO"] == http_exchange(werkzeug_port, request_line, [], b"")["environ"]["PATH_INFO"]
        assert env["PATH_INFO"] == target.replace("%2E", ".")
