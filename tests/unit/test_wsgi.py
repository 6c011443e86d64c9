"""The WSGI side (PEP 3333) without sockets: environ building, SCRIPT_NAME /
PATH_INFO, response heads, start_response rules, and run_app's error handling.

`run_app` writes to a transport (see wsgi.py's docstring); `Recorder` is such a
transport that keeps what it was given."""

import io
import logging
import os
import sys
import tempfile

import pytest

from wsgi_fcgi import protocol as p
from wsgi_fcgi.environ import build_environ, params_to_environ, split_script_name, url_scheme
from wsgi_fcgi.wsgi import (
    FILE_BLOCK,
    INTERNAL_ERROR,
    ErrorStream,
    FileWrapper,
    InvalidResponse,
    base_environ,
    declared_length,
    encode_head,
    run_app,
)


class Recorder:
    """A transport: keeps the (data, end) calls; `gone=True` acts as a lost client."""

    def __init__(self, gone=False):
        self.sent = []
        self.stderr = []
        self.gone = gone
        self.truncated = False

    def send(self, data, end, head=b""):
        self.sent.append((head + data, end))
        return not self.gone

    def truncate(self):
        self.truncated = True

    @property
    def aborted(self):
        return self.gone

    def send_stderr(self, data):
        self.stderr.append(data)

    @property
    def output(self):
        return b"".join(data for data, _ in self.sent)

    @property
    def ended(self):
        return [end for _, end in self.sent].count(True)


def pairs(**params):
    """Params as a request carries them (protocol.decode_params: latin-1 strings)."""
    return list(params.items())


# -- environ ---------------------------------------------------------------------

def test_params_become_latin1_native_strings():
    environ = params_to_environ(p.decode_params(p.encode_pairs([(b"PATH", b"/caf\xc3\xa9"), (b"HTTP_X", b"\xff")])))
    assert environ == {"PATH": "/caf\xc3\xa9", "HTTP_X": "\xff"}
    assert all(type(v) is str for v in environ.values())


def test_repeated_cookie_joined_with_semicolon_others_with_comma():
    environ = params_to_environ([("HTTP_COOKIE", "a=1"), ("HTTP_ACCEPT", "text/html"),
                                 ("HTTP_COOKIE", "b=2"), ("HTTP_ACCEPT", "*/*"), ("HTTP_COOKIE", "c=3")])
    assert environ["HTTP_COOKIE"] == "a=1; b=2; c=3"
    assert environ["HTTP_ACCEPT"] == "text/html, */*"


def test_a_cgi_variable_sent_twice_keeps_its_last_value():
    # Flask's FastCGI docs set SCRIPT_NAME again after `include fastcgi_params`.
    environ = params_to_environ([("SCRIPT_NAME", "/yourapplication/index"), ("PATH_INFO", "/a"),
                                 ("SCRIPT_NAME", "/yourapplication"), ("SERVER_PORT", "80"),
                                 ("SERVER_PORT", "8080")])
    assert environ["SCRIPT_NAME"] == "/yourapplication"
    assert environ["SERVER_PORT"] == "8080"


def test_http_host_sent_twice_keeps_the_last_value():
    # Debian's fastcgi_params send `HTTP_HOST $host` (no port); configs add `$http_host`.
    environ = params_to_environ([("HTTP_HOST", "127.0.0.1"), ("HTTP_HOST", "127.0.0.1:8080")])
    assert environ["HTTP_HOST"] == "127.0.0.1:8080"


def test_many_repeated_headers_are_merged_in_linear_time():
    import time
    params = [("HTTP_X_A", "v")] * 200_000
    started = time.process_time()
    environ = params_to_environ(params)
    assert environ["HTTP_X_A"] == ", ".join(["v"] * 200_000)
    assert time.process_time() - started < 2.0  # quadratic joining took minutes


def test_under_a_prefix_the_path_the_server_routed_is_split():
    # H2O sends the normalised path it routed as PATH_INFO (SCRIPT_NAME empty),
    # REQUEST_URI still has the dot segments.
    environ = build_environ(pairs(SCRIPT_NAME="", PATH_INFO="/app/y", REQUEST_URI="/app/x/%2e%2e/y"),
                            base_environ(), "/app")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/y")
    # a server path outside the mount point: the request path decides, as before
    environ = build_environ(pairs(SCRIPT_NAME="/index.php", PATH_INFO="/z", REQUEST_URI="/app/z"),
                            base_environ(), "/app")
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/z")


def test_the_web_servers_server_software_reaches_the_app():
    environ = build_environ(pairs(SERVER_SOFTWARE="nginx/1.22.1", REQUEST_URI="/"), base_environ())
    assert environ["SERVER_SOFTWARE"] == "nginx/1.22.1"
    assert build_environ(pairs(REQUEST_URI="/"), base_environ())["SERVER_SOFTWARE"] == "wsgi-fcgi"


def test_http_content_length_and_type_are_dropped():
    environ = params_to_environ(pairs(CONTENT_LENGTH="3", CONTENT_TYPE="text/plain",
                                      HTTP_CONTENT_LENGTH="3", HTTP_CONTENT_TYPE="text/plain"))
    assert environ == {"CONTENT_LENGTH": "3", "CONTENT_TYPE": "text/plain"}


NGINX_STOCK = dict(REQUEST_URI="/a/b?x=1", SCRIPT_NAME="/a/b", DOCUMENT_URI="/a/b", QUERY_STRING="x=1")


def split(script_name="", **params):
    environ = dict(params)
    split_script_name(environ, script_name)
    return environ["SCRIPT_NAME"], environ["PATH_INFO"]


def test_nginx_stock_params_at_the_root():
    assert split(**NGINX_STOCK) == ("", "/a/b")


def test_nginx_stock_params_under_a_prefix():
    assert split("/a", **NGINX_STOCK) == ("/a", "/b")
    assert split("/a", REQUEST_URI="/a", SCRIPT_NAME="/a") == ("/a", "")
    assert split("/a", REQUEST_URI="/a/", SCRIPT_NAME="/a/") == ("/a", "/")
    # a path that only starts with the same letters is not under the prefix
    assert split("/a", REQUEST_URI="/ab/c", SCRIPT_NAME="/ab/c") == ("", "/ab/c")


@pytest.mark.parametrize("uri, path_info", [
    ("/a%2525b", "/a%25b"),                 # decoded exactly once
    ("/caf%C3%A9", "/caf\xc3\xa9"),         # UTF-8 bytes as latin-1 chars (PEP 3333)
    ("/a%20b?q=%20", "/a b"),               # the query is not part of the path
    ("/a%2Fb", "/a/b"),
    ("/plain", "/plain"),
    ("http://example.com/abs/path?x", "/abs/path"),  # absolute-form request target
])
def test_path_is_percent_decoded_exactly_once(uri, path_info):
    assert split(REQUEST_URI=uri, SCRIPT_NAME="/ignored") == ("", path_info)


def test_prefix_and_encoded_path():
    assert split("/app", REQUEST_URI="/app/caf%C3%A9/%2525") == ("/app", "/caf\xc3\xa9/%25")


def test_server_split_is_kept_when_path_info_is_sent():
    # lighttpd / Apache: the web server splits the path itself
    assert split(SCRIPT_NAME="/app.fcgi", PATH_INFO="/x/y", REQUEST_URI="/app.fcgi/x/y") == ("/app.fcgi", "/x/y")
    assert split(SCRIPT_NAME="/", PATH_INFO="x") == ("", "/x")


def test_script_name_option_wins_over_the_server_split():
    assert split("/app", SCRIPT_NAME="/app", PATH_INFO="/x", REQUEST_URI="/app/x") == ("/app", "/x")


def test_without_request_uri_script_name_plus_path_info_is_used():
    assert split(SCRIPT_NAME="/a", PATH_INFO="") == ("", "/a")
    assert split("/a", SCRIPT_NAME="/a/b") == ("/a", "/b")
    assert split() == ("", "")


@pytest.mark.parametrize("params, scheme", [
    ({}, "http"), ({"HTTPS": "on"}, "https"), ({"HTTPS": "ON"}, "https"), ({"HTTPS": "1"}, "https"),
    ({"HTTPS": "off"}, "http"), ({"HTTPS": ""}, "http"), ({"REQUEST_SCHEME": "https"}, "https"),
    ({"REQUEST_SCHEME": "http"}, "http"),
])
def test_url_scheme(params, scheme):
    assert url_scheme(params) == scheme


def test_build_environ_defaults_and_base():
    base = base_environ(multithread=True, multiprocess=True)
    environ = build_environ(pairs(REQUEST_URI="/x", SCRIPT_NAME="/x", HTTPS="on"), base)
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["wsgi.multithread"] is True and environ["wsgi.multiprocess"] is True
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.file_wrapper"] is FileWrapper
    assert environ["REQUEST_METHOD"] == "GET" and environ["QUERY_STRING"] == ""
    assert environ["SERVER_NAME"] and environ["SERVER_PORT"] and environ["SERVER_PROTOCOL"]
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/x")


# -- the response head --------------------------------------------------------

def test_encode_head():
    head = encode_head("404 Not Found", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"),
                                         ("Set-Cookie", "b=2"), ("X-Latin", "caf\xe9")])
    assert head == (b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
                    b"Set-Cookie: b=2\r\nX-Latin: caf\xe9\r\n\r\n")


@pytest.mark.parametrize("status", ["200", "200 OK", "599 Custom Thing", "204 No Content"])
def test_valid_statuses(status):
    assert encode_head(status, []).startswith(b"Status: " + status.encode() + b"\r\n")


@pytest.mark.parametrize("status", ["OK", "20 OK", "2000 OK", "099 Low", " 200 OK", "200 OK\r\nX: y",
                                    "200 OK\n", 200, b"200 OK", "", "200\tOK"])
def test_bad_status_is_refused(status):
    with pytest.raises(InvalidResponse):
        encode_head(status, [])


@pytest.mark.parametrize("header", [
    ("X-Bad", "a\r\nInjected: yes"), ("X-Bad", "a\nb"), ("X-Bad", "a\rb"), ("X-Bad", "nul\x00"), ("X-Bad", "del\x7f"),
    ("X-Bad", "snowman \u2603"), ("Bad Name", "v"), ("Bad:Name", "v"), ("", "v"), ("X\r\nY", "v"),
    ("Caf\xe9", "v"), (b"X-Bytes", "v"), ("X-Bytes", b"v"), ("X-Int", 1), ("only-one",), "XY",
])
def test_bad_headers_are_refused(header):
    with pytest.raises(InvalidResponse):
        encode_head("200 OK", [header])


def test_tab_in_a_header_value_is_allowed():
    assert encode_head("200 OK", [("X-Tab", "a\tb")]).endswith(b"X-Tab: a\tb\r\n\r\n")


def test_obs_text_in_a_header_value_is_allowed():
    assert encode_head("200 OK", [("X-Latin", "caf\xe9")]).endswith(b"X-Latin: caf\xe9\r\n\r\n")


def test_a_status_or_name_refused_once_is_refused_again():
    # statuses and names are cached once checked: the verdict, not only the good ones
    for _ in range(2):
        with pytest.raises(InvalidResponse):
            encode_head("2000 OK", [])
        with pytest.raises(InvalidResponse):
            encode_head("200 OK", [("Bad Name", "v")])


# -- run_app ----------------------------------------------------------------------

ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}


def run(app, **kw):
    transport = Recorder(**kw)
    response = run_app(app, dict(ENVIRON), transport)
    return transport, response


def test_single_chunk_response_is_one_send_with_the_end():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]
    transport, response = run(app)
    assert transport.sent == [(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", True)]
    assert response.status == "200 OK"


def test_headers_are_held_until_the_first_non_empty_chunk():
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b""
        yield b""
        yield b"body"
        yield b"more"
    transport, _ = run(app)
    assert transport.sent == [(b"Status: 200 OK\r\n\r\nbody", False), (b"more", False), (b"", True)]


def test_empty_body_sends_the_head_with_the_end():
    def app(environ, start_response):
        start_response("204 No Content", [])
        return []
    transport, _ = run(app)
    assert transport.sent == [(b"Status: 204 No Content\r\n\r\n", True)]


def test_start_response_may_be_called_late_from_the_iterable():
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"x"
    assert run(app)[0].output == b"Status: 200 OK\r\n\r\nx"


def test_write_callable_sends_at_once_headers_first():
    def app(environ, start_response):
        write = start_response("200 OK", [("X-A", "1")])
        write(b"written ")
        assert transport.sent == [(b"Status: 200 OK\r\nX-A: 1\r\n\r\nwritten ", False)]
        return [b"returned"]
    transport = Recorder()
    run_app(app, dict(ENVIRON), transport)
    assert transport.output == b"Status: 200 OK\r\nX-A: 1\r\n\r\nwritten returned"
    assert transport.ended == 1


def test_an_iterable_that_completes_its_content_length_ends_in_the_same_send():
    # Flask and Django return an iterable, not a list: the chunk that
    # completes the declared length goes out with the end, not before it.
    after_the_last_chunk = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "9")])
        yield b"four"
        yield b"five!"
        after_the_last_chunk.append(True)  # the iterable still runs to its end
    transport, response = run(app)
    assert transport.sent == [(b"Status: 200 OK\r\nContent-Length: 9\r\n\r\nfour", False), (b"five!", True)]
    assert after_the_last_chunk == [True]
    assert response.bytes_sent == len(transport.output)


def test_a_body_shorter_than_its_content_length_ends_after_the_iterable():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "100")])
        return iter([b"short"])
    transport, _ = run(app)
    assert transport.sent == [(b"Status: 200 OK\r\nContent-Length: 100\r\n\r\nshort", False), (b"", True)]


def test_a_head_request_gets_the_head_and_no_body():
    # RFC 3875 4.3.3: the script MUST NOT provide a body for HEAD
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "5")])
        return [b"hello"]
    transport = Recorder()
    response = run_app(app, dict(ENVIRON, REQUEST_METHOD="HEAD"), transport)
    assert transport.sent == [(b"Status: 200 OK\r\nContent-Length: 5\r\n\r\n", True)]
    assert response.bytes_sent == len(transport.output)


def test_a_head_request_that_fails_gets_the_500_head_alone():
    def app(environ, start_response):
        raise RuntimeError("boom")
    transport = Recorder()
    run_app(app, dict(ENVIRON, REQUEST_METHOD="HEAD"), transport)
    assert transport.sent == [(b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                               b"Content-Length: 21\r\n\r\n", True)]


def test_a_head_request_stops_the_iterable_once_the_head_is_out():
    produced, closed = [], []

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        write(b"by write()")
        try:
            for block in range(1000):  # a large download
                produced.append(block)
                yield b"x" * 4096
        finally:
            closed.append(True)
    transport = Recorder()
    run_app(app, dict(ENVIRON, REQUEST_METHOD="HEAD"), transport)
    assert transport.sent == [(b"Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n", True)]
    assert produced == [0] and closed == [True]


def test_output_past_the_content_length_is_dropped_with_one_warning(caplog):
    closed = []

    class Body:
        def __iter__(self):
            yield b"12345678"
            yield b"more"
            yield b"and more"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("content-length", " 5 ")])
        return Body()
    with caplog.at_level(logging.WARNING, logger="wsgi_fcgi"):
        transport, response = run(app)
    assert transport.sent == [(b"Status: 200 OK\r\ncontent-length:  5 \r\n\r\n12345", True)]
    assert closed == [True]
    warnings = [r.getMessage() for r in caplog.records if "Content-Length" in r.getMessage()]
    assert warnings == ["200 OK response: the app sent more than the Content-Length it declared; "
                        "3 bytes dropped, and any it sends later (PEP 3333)"]
    assert response.bytes_sent == len(transport.output)


def test_write_past_the_content_length_is_dropped_not_an_error():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "3")])
        write(b"abc")
        write(b"def")  # dropped; the app is not told the client left
        return []
    transport, response = run(app)
    assert transport.sent == [(b"Status: 200 OK\r\nContent-Length: 3\r\n\r\nabc", True)]
    assert response.status == "200 OK"


@pytest.mark.parametrize("head, length", [
    (b"Status: 200 OK\r\nContent-Length: 12\r\n\r\n", 12),
    (b"Status: 200 OK\r\nX-A: 1\r\nCONTENT-LENGTH:0\r\n\r\n", 0),
    (b"Status: 200 OK\r\nContent-Length: \t7 \r\n\r\n", 7),
    (b"Status: 200 OK\r\n\r\n", None),
    (b"Status: 200 OK\r\nX-Content-Length: 5\r\n\r\n", None),
    (b"Status: 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", None),
    (b"Status: 200 OK\r\nContent-Length: +5\r\n\r\n", None),
    (b"Status: 200 OK\r\nContent-Length: 5, 5\r\n\r\n", None),
    (b"Status: 200 OK\r\nContent-Length: \r\n\r\n", None),
    (b"Status: 200 OK\r\nContent-Length: " + b"9" * 19 + b"\r\n\r\n", None),
])
def test_declared_length(head, length):
    assert declared_length(head) == length


class ClosingBody:
    def __init__(self, chunks, fail_at=None):
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self):
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise RuntimeError("fails in iteration")
            yield chunk

    def close(self):
        self.closed += 1


@pytest.mark.parametrize("fail_at", [None, 0, 1])
def test_close_is_always_called_once(fail_at):
    body = ClosingBody([b"a", b"b"], fail_at)

    def app(environ, start_response):
        start_response("200 OK", [])
        return body
    transport, _ = run(app)
    assert body.closed == 1
    # ended once: normally, or cut (no END_REQUEST) when it fails after the head
    assert transport.ended + transport.truncated == 1


def test_close_is_called_when_the_client_is_gone():
    body = ClosingBody([b"a", b"b", b"c"])

    def app(environ, start_response):
        start_response("200 OK", [])
        return body
    transport, _ = run(app, gone=True)
    assert body.closed == 1
    assert len(transport.sent) == 1  # stopped after the first failed send


def test_exception_before_headers_gives_a_500_without_traceback(caplog):
    def app(environ, start_response):
        raise RuntimeError("secret-token-123")
    with caplog.at_level(logging.ERROR, "wsgi_fcgi.app"):
        transport, response = run(app)
    assert transport.sent == [(INTERNAL_ERROR, True)]
    assert b"secret" not in transport.output and b"Traceback" not in transport.output
    assert response.status.startswith("500")
    assert "secret-token-123" in caplog.text and "Traceback" in caplog.text


def test_exception_after_start_response_but_before_body_gives_a_500():
    def app(environ, start_response):
        start_response("200 OK", [("X-A", "1")])
        raise RuntimeError("boom")
    transport, _ = run(app)
    assert transport.sent == [(INTERNAL_ERROR, True)]


def test_exception_after_headers_ends_the_request_cleanly():
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        raise RuntimeError("boom after headers")
    transport, _ = run(app)
    # No END_REQUEST after the head: the transport cuts the response (the
    # client must not see a well-formed short body).
    assert transport.sent == [(b"Status: 200 OK\r\n\r\nfirst", False)]
    assert transport.truncated


def test_empty_chunks_are_checked_for_aborts():
    seen = []

    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        for n in range(1000):  # a heartbeat generator of empty chunks
            seen.append(n)
            yield b""
    transport = Recorder()
    response_iter = []

    def gone_after_first(data, end, head=b""):
        response_iter.append(data)
        transport.gone = True
        return True
    transport.send = gone_after_first
    run_app(app, build_environ([], base_environ()), transport)
    assert len(seen) == 1  # stopped at the first empty chunk after the abort


def test_system_exit_in_the_app_is_caught():
    def app(environ, start_response):
        sys.exit(3)
    transport, _ = run(app)
    assert transport.sent == [(INTERNAL_ERROR, True)]


def test_invalid_header_gives_a_500():
    def app(environ, start_response):
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"should not be sent"]
    transport, _ = run(app)
    assert transport.sent == [(INTERNAL_ERROR, True)]


def test_body_that_is_not_bytes_gives_a_500():
    def app(environ, start_response):
        start_response("200 OK", [])
        return ["text, not bytes"]
    assert run(app)[0].sent == [(INTERNAL_ERROR, True)]


def test_body_before_start_response_gives_a_500():
    def app(environ, start_response):
        return [b"no head"]
    assert run(app)[0].sent == [(INTERNAL_ERROR, True)]


def test_second_start_response_without_exc_info_is_an_error():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b"x"]
    assert run(app)[0].sent == [(INTERNAL_ERROR, True)]


def test_start_response_with_exc_info_before_the_head_is_sent_replaces_the_head():
    def app(environ, start_response):
        start_response("200 OK", [("X-Was", "ok")])
        try:
            raise ValueError("handled")
        except ValueError:
            start_response("500 Oops", [("X-Now", "error")], sys.exc_info())
        return [b"error page"]
    assert run(app)[0].sent == [(b"Status: 500 Oops\r\nX-Now: error\r\n\r\nerror page", True)]


def test_start_response_with_exc_info_after_the_head_is_sent_reraises():
    seen = []

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise ValueError("late")
        except ValueError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except ValueError as exc:
                seen.append(exc)
                raise
        return [b"never"]
    transport, _ = run(app)
    assert [str(e) for e in seen] == ["late"]
    assert transport.sent == [(b"Status: 200 OK\r\n\r\npartial", False)]
    assert transport.truncated


def test_write_after_the_client_is_gone_raises_in_the_app_and_close_is_called():
    body = ClosingBody([b"never"])

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"a")
        return body
    transport, _ = run(app, gone=True)
    assert len(transport.sent) == 1
    assert body.closed == 0  # write() raised before the body existed


# -- wsgi.errors and wsgi.file_wrapper ------------------------------------------------

def test_error_stream_sends_stderr_and_logs_whole_lines(caplog):
    transport = Recorder()
    errors = ErrorStream(transport)
    with caplog.at_level(logging.ERROR, "wsgi_fcgi.app"):
        assert errors.write("one\ntw") == 6
        errors.writelines(["o\n", "three"])
        errors.flush()
    assert b"".join(transport.stderr) == b"one\ntwo\nthree"
    assert [r.getMessage() for r in caplog.records] == ["one", "two", "three"]
    with pytest.raises(TypeError):
        errors.write(b"bytes")


def test_file_wrapper_reads_a_pipe_in_the_suggested_blocks_and_closes():
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as sink:
        sink.write(b"x" * 10000)
    f = os.fdopen(read_end, "rb")
    wrapper = FileWrapper(f, 4096)
    assert [len(chunk) for chunk in wrapper] == [4096, 4096, 1808]
    wrapper.close()
    assert f.closed


def test_file_wrapper_reads_a_regular_file_in_large_blocks(tmp_path):
    """PEP 3333 lets the server ignore the suggested block size: a regular
    file goes out in blocks of four full FCGI_STDOUT records (and 4 bytes)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * (FILE_BLOCK + 10))
    with open(path, "rb") as f:
        assert [len(chunk) for chunk in FileWrapper(f, 4096)] == [FILE_BLOCK, 10]
    assert FILE_BLOCK // p.MAX_CONTENT_LEN == 4
    with open(path, "rb", buffering=0) as raw:
        assert FileWrapper(raw, 4096).blksize == FILE_BLOCK
    with open(path, "rb") as f:
        assert FileWrapper(f, 2 * FILE_BLOCK).blksize == 2 * FILE_BLOCK  # a larger suggestion stands
    assert FileWrapper(io.BytesIO(b"data"), 4096).blksize == FILE_BLOCK


def test_file_wrapper_keeps_the_suggestion_where_a_read_could_wait(tmp_path):
    closed = open(tmp_path / "closed", "wb+")
    closed.close()
    spooled = tempfile.SpooledTemporaryFile(max_size=1 << 20)
    spooled.write(b"in memory")
    spooled.seek(0)
    for filelike in (closed, spooled, open("/dev/null", "rb")):
        assert FileWrapper(filelike, 4096).blksize == 4096, filelike
    assert not spooled._rolled  # its fileno() was not asked: that would move it to disk


def test_file_wrapper_through_run_app(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789" * 10000)

    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 8192)
    transport = Recorder()
    run_app(app, dict(ENVIRON, **{"wsgi.file_wrapper": FileWrapper}), transport)
    assert transport.output == b"Status: 200 OK\r\n\r\n" + path.read_bytes()


def test_body_read_failing_because_the_client_left_is_no_app_error(caplog):
    from wsgi_fcgi.body import ClientDisconnected, RequestBody

    body = RequestBody()
    body.fail(ClientDisconnected("request aborted by the web server"))

    def app(environ, start_response):
        environ["wsgi.input"].read(10)
        start_response("200 OK", [])
        return [b"never"]
    transport = Recorder(gone=True)
    with caplog.at_level(logging.DEBUG, "wsgi_fcgi"):
        run_app(app, dict(ENVIRON, **{"wsgi.input": body}), transport)
    assert transport.sent == []  # nothing to say to a client that is gone
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
