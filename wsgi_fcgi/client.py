"""A FastCGI client: for debugging, health checks and tests.

    python -m wsgi_fcgi.client --connect 127.0.0.1:9000 /path?query
    python -m wsgi_fcgi.client --connect unix:/run/wsgi-fcgi/app.sock -X POST -d 'a=1' /form
    python -m wsgi_fcgi.client --connect 127.0.0.1:9000 --get-values
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Iterable
from typing import NamedTuple

from . import protocol as p
from .listeners import ConfigError, parse_address


class BadResponse(ValueError):
    """The application's CGI response cannot be read (e.g. a bad Status: line)."""


class Response(NamedTuple):
    status: int
    headers: list  # [(name, value)] as str
    body: bytes
    stderr: bytes
    app_status: int
    protocol_status: int

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def connect(address: str, timeout: float = 30.0) -> socket.socket:
    addr = parse_address(address)
    if addr.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(addr.path)
        return sock
    if addr.kind != "tcp":
        raise ConfigError("--connect takes HOST:PORT, [IPv6]:PORT or unix:PATH")
    sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def cgi_params(method: str, target: str, *, headers: Iterable[tuple[str, str]] = (),
               body_length: int | None = None, server: tuple[str, int] = ("localhost", 80),
               https: bool = False, extra: Iterable[tuple[str, str]] = ()) -> list[tuple[bytes, bytes]]:
    """CGI params as nginx's stock fastcgi_params builds them for `target`."""
    from urllib.parse import unquote_to_bytes

    path, _, query = target.partition("?")
    decoded = unquote_to_bytes(path.encode("latin-1"))  # the target's bytes, held in a latin-1 str
    params = [
        ("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_SOFTWARE", "wsgi-fcgi-client"),
        ("REQUEST_METHOD", method), ("REQUEST_URI", target), ("QUERY_STRING", query),
        ("SCRIPT_NAME", decoded.decode("latin-1")), ("DOCUMENT_URI", decoded.decode("latin-1")),
        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "https" if https else "http"),
        ("SERVER_NAME", server[0]), ("SERVER_PORT", str(server[1])),
        ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "0"),
        ("CONTENT_LENGTH", "" if body_length is None else str(body_length)),
    ]
    if https:
        params.append(("HTTPS", "on"))
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            params.append(("CONTENT_TYPE", value))
        params.append(("HTTP_" + key, value))
    extra = list(extra)
    replaced = {name for name, _ in extra}
    params = [item for item in params if item[0] not in replaced] + extra
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in params]


def encode_request(request_id: int, params: list, body: bytes = b"", *, role: int = p.RESPONDER,
                   keep_conn: bool = False, data: bytes | None = None) -> bytes:
    """BEGIN_REQUEST, PARAMS, STDIN (and DATA for a filter), each stream closed."""
    out = [p.encode_begin_request(request_id, role, p.KEEP_CONN if keep_conn else 0),
           p.encode_params(request_id, params)]
    if role != p.AUTHORIZER:
        out += [p.encode_stream(p.STDIN, request_id, body), p.encode_record(p.STDIN, request_id)]
    if data is not None:
        out += [p.encode_stream(p.DATA, request_id, data), p.encode_record(p.DATA, request_id)]
    return b"".join(out)


def read_response(sock: socket.socket, request_id: int = 1, parser: p.RecordParser | None = None) -> Response:
    """Read records until this request's END_REQUEST; other ids' records are dropped."""
    parser = parser or p.RecordParser()
    stdout, stderr = [], []
    while True:
        data = sock.recv(262144)
        if not data:
            raise ConnectionError("connection closed before FCGI_END_REQUEST")
        for record in parser.feed(data):
            if record.request_id != request_id:
                continue
            if record.type == p.STDOUT:
                stdout.append(record.content)
            elif record.type == p.STDERR:
                stderr.append(record.content)
            elif record.type == p.END_REQUEST:
                end = p.decode_end_request(record.content)
                return parse_cgi_response(b"".join(stdout), b"".join(stderr), end)


def parse_cgi_response(output: bytes, stderr: bytes, end: p.EndRequest) -> Response:
    head, sep, body = output.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = output.partition(b"\n\n")
    status = 200 if sep else 0
    headers = []
    for line in head.decode("latin-1").splitlines() if sep else ():
        name, _, value = line.partition(":")
        value = value.strip()
        if name.lower() == "status":
            code = value.split(None, 1)[0] if value else ""
            if not (code.isdigit() and len(code) == 3):
                raise BadResponse("bad Status line in the response: %r" % line)
            status = int(code)
        else:
            headers.append((name, value))
    return Response(status, headers, body, stderr, end.app_status, end.protocol_status)


def request(address: str, method: str = "GET", target: str = "/", *, headers=(), body: bytes = b"",
            extra_params=(), timeout: float = 30.0, role: int = p.RESPONDER,
            data: bytes | None = None) -> Response:
    """One request on a new connection."""
    params = cgi_params(method, target, headers=headers,
                        body_length=len(body) if body or method in ("POST", "PUT", "PATCH") else None,
                        extra=extra_params)
    with connect(address, timeout) as sock:
        sock.sendall(encode_request(1, params, body, role=role, data=data))
        return read_response(sock, 1)


def get_values(address: str, names=(p.MAX_CONNS, p.MAX_REQS, p.MPXS_CONNS), timeout: float = 10.0) -> dict:
    with connect(address, timeout) as sock:
        sock.sendall(p.encode_get_values(names))
        parser = p.RecordParser()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before FCGI_GET_VALUES_RESULT")
            for record in parser.feed(data):
                if record.type == p.GET_VALUES_RESULT:
                    return {k.decode("latin-1"): v.decode("latin-1") for k, v in p.decode_pairs(record.content)}


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wsgi_fcgi.client",
                                     description="Send one FastCGI request and print the response.")
    parser.add_argument("--connect", required=True, metavar="ADDR", help="HOST:PORT, [IPv6]:PORT or unix:PATH")
    parser.add_argument("-X", "--method", default=None)
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    parser.add_argument("-d", "--data", help="request body")
    parser.add_argument("--data-file", metavar="FILE", help="request body from a file (- for stdin)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra FastCGI param (overrides the generated ones)")
    parser.add_argument("-i", "--include", action="store_true", help="print the response headers too")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--get-values", action="store_true", help="send FCGI_GET_VALUES and print the answer")
    parser.add_argument("target", nargs="?", default="/", metavar="PATH[?QUERY]")
    args = parser.parse_args(argv)
    headers, extra = _pairs(args.header, ":", "-H", "'Name: value'"), _pairs(args.param, "=", "--param", "NAME=VALUE")
    try:
        if args.get_values:
            for name, value in get_values(args.connect, timeout=args.timeout).items():
                print("%s=%s" % (name, value))
            return
        body = b""
        if args.data_file:
            with (sys.stdin.buffer if args.data_file == "-" else open(args.data_file, "rb")) as f:
                body = f.read()
        elif args.data is not None:
            body = args.data.encode("utf-8")
        method = _wire(args.method or ("POST" if args.data is not None or args.data_file else "GET"))
        response = request(args.connect, method, _wire(args.target), headers=headers, body=body,
                           extra_params=extra, timeout=args.timeout)
    except BadResponse as exc:
        _exit("%s" % exc, 1)
    except (OSError, ConfigError, p.ProtocolError) as exc:
        _exit("%s" % exc, 2)
    out = sys.stdout.buffer
    if args.include:
        out.write(("Status: %d\r\n" % response.status).encode())
        for name, value in response.headers:
            out.write(("%s: %s\r\n" % (name, value)).encode("latin-1"))
        out.write(b"\r\n")
    out.write(response.body)
    out.flush()
    if response.stderr:
        sys.stderr.buffer.write(response.stderr)
    sys.exit(0 if 200 <= response.status < 400 else 1)


def _exit(message: str, code: int):
    sys.stderr.write("wsgi_fcgi.client: %s\n" % message)
    sys.exit(code)


def _wire(text: str) -> str:
    """Command-line text as the bytes it is sent as (UTF-8; FastCGI params
    are bytes), held in a latin-1 str as the params are."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def _pairs(items: list, separator: str, option: str, form: str) -> list:
    pairs = []
    for item in items:
        name, sep, value = item.partition(separator)
        if not sep or not name.strip():
            _exit("%s %r: write %s" % (option, item, form), 2)
        pairs.append((_wire(name.strip()), _wire(value.strip() if separator == ":" else value)))
    return pairs


if __name__ == "__main__":
    main()
