"""The access log under hostile values: a FastCGI peer sending CR/LF and
ESC in REQUEST_URI, an HTTP client sending terminal escapes and quotes in
its User-Agent through nginx.  Text formats escape as nginx does, the JSON
format is one valid object per line, gunicorn formats carry over."""

import json
import re
import socket

import pytest
from support import fastcgi_location, wait_for

from wsgi_fcgi import accesslog, client
from wsgi_fcgi.errors import ConfigError

FORGED = "/a\r\n127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] \"GET /admin HTTP/1.1\" 200 0\x1b[2J\\"
HOSTILE_AGENT = 'evil \x1b]0;owned\x07\x1b[31m"quoted" \\ end'
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def _hostile_request(address: str) -> client.Response:
    """REQUEST_URI with CR/LF, ESC and a backslash, straight over FastCGI."""
    return client.request(address, "GET", "/", timeout=15, extra_params=[("REQUEST_URI", FORGED)],
                          headers=[("User-Agent", HOSTILE_AGENT)])


def _http_get(port: int, target: str, user_agent: bytes) -> bytes:
    """A raw HTTP/1.1 request to nginx, so the User-Agent bytes go as they are."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: localhost\r\nUser-Agent: " + user_agent
                     + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _lines(path, count: int) -> list:
    return wait_for(lambda: path.exists() and len(lines := path.read_text().splitlines()) >= count and lines,
                    10, what="%d access log lines" % count)


def test_default_format_escapes_what_peers_send(start_wsgi_fcgi, start_nginx, tmp_path):
    log = tmp_path / "access.log"
    server = start_wsgi_fcgi("metricsapp:app", "--access-log", str(log))
    nginx = start_nginx(fastcgi_location(server.address))
    assert _hostile_request(server.address).status == 200
    answer = _http_get(nginx.port, "/status/404", b'ua \x1b[31mred\x1b[0m "q" \\ \xff')
    assert answer.startswith(b"HTTP/1.1 404")

    lines = _lines(log, 2)
    assert len(lines) == 2  # CR/LF in the URI forged no line
    first, second = lines
    assert "\r" not in log.read_text() and "\x1b" not in log.read_text()
    assert ('"GET /a\\x0D\\x0A127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] \\x22GET /admin HTTP/1.1\\x22 200 '
            '0\\x1B[2J\\x5C HTTP/1.1" 200 ') in first
    assert re.match(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /status/404 HTTP/1.1" 404 ',
                    second), second


def test_json_format_is_one_valid_object_per_line(start_wsgi_fcgi, start_nginx, tmp_path):
    log = tmp_path / "access.json"
    server = start_wsgi_fcgi("metricsapp:app", "--access-log", str(log), "--access-log-format", "json")
    nginx = start_nginx(fastcgi_location(server.address))
    assert _hostile_request(server.address).status == 200
    assert client.request(server.address, "POST", "/body", body=b"x" * 10, timeout=15).body == b"10"
    _http_get(nginx.port, "/status/503?caf%C3%A9=1", 'ua "é" \x1b[0m'.encode())

    entries = [json.loads(line) for line in _lines(log, 3)]
    assert len(entries) == 3
    hostile, post, through_nginx = entries
    assert hostile["uri"] == FORGED and hostile["user_agent"] == HOSTILE_AGENT  # lossless
    assert hostile["status"] == 200 and hostile["method"] == "GET" and RFC3339.match(hostile["time"])
    assert post["method"] == "POST" and post["bytes"] > 0 and post["duration_ms"] >= 0
    assert through_nginx["status"] == 503 and through_nginx["uri"] == "/status/503?caf%C3%A9=1"
    assert through_nginx["user_agent"] == 'ua "é" \x1b[0m' and through_nginx["remote_addr"] == "127.0.0.1"
    assert set(hostile) == {"time", "remote_addr", "method", "uri", "path", "query", "protocol", "status",
                            "bytes", "duration_ms", "pid", "request_id", "host", "referer", "user_agent"}


def test_gunicorn_atoms_and_rfc3339_times(start_wsgi_fcgi, tmp_path):
    log = tmp_path / "access.log"
    gunicorn_format = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s '
                       '%(B)s %(T)s %(M)s %(D)s %(L)s %(p)s "%({user-agent}i)s" %({content-type}o)s '
                       '%({SERVER_NAME}e)s')
    server = start_wsgi_fcgi("metricsapp:app", "--access-log", str(log), "--access-log-format", gunicorn_format)
    response = client.request(server.address, "GET", "/status/302?x=1", timeout=15,
                              headers=[("User-Agent", 'a "b"'), ("Referer", "http://r/")])
    assert response.status == 302
    (line,) = _lines(log, 1)
    match = re.match(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /status/302\?x=1 '
                     r'HTTP/1\.1" 302 (\d+) "http://r/" "a \\x22b\\x22" GET /status/302 x=1 HTTP/1\.1 (\d+) '
                     r'0 (\d+) (\d+) (\d+\.\d{6}) <(\d+)> "a \\x22b\\x22" - localhost$', line)
    assert match, line
    assert match.group(1) == match.group(2) and int(match.group(1)) > 0
    assert 0 <= int(match.group(3)) <= int(match.group(4)) // 1000 + 1

    server.stop()
    iso = tmp_path / "iso.log"
    server = start_wsgi_fcgi("metricsapp:app", "--access-log", str(iso), "--access-log-format", "{iso_time} {uri}")
    client.request(server.address, "GET", "/x", timeout=15)
    (line,) = _lines(iso, 1)
    stamp, uri = line.split(" ")
    assert RFC3339.match(stamp) and uri == "/x", line


def test_unknown_atoms_of_either_style_are_refused_before_serving():
    # (the one-line start-up error itself: test_master.test_a_bad_access_log_format_is_one_line_at_start_up)
    for fmt, message in (("%(h)s %(Z)s", "unknown atom %(Z)s"), ("{remote_addr} {nope}", "unknown atom {nope}"),
                         ("%(h)d", "a real number is required"), ("{status:d}", "Unknown format code")):
        with pytest.raises(ConfigError) as refused:
            accesslog.check_format(fmt)
        assert str(refused.value).startswith("--access-log-format: ") and message in str(refused.value), fmt
    for fmt in ("json", accesslog.DEFAULT_FORMAT, "%({x-y}i)s %({PATH}e)s %({etag}o)s %%"):
        accesslog.check_format(fmt)
