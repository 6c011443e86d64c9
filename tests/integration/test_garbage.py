"""A request, or a connection, leaves no reference cycle behind: its objects
are freed by reference counting when it ends, not by the cyclic GC (whose
collections cost every request CPU and keep memory until they run)."""

import json
import socket
import struct

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p


def _get(address, target):
    return client.request(address, "GET", target, timeout=20)


def test_requests_and_connections_leave_no_cycles(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--threads", "4")
    assert _get(server.address, "/gc/pause").status == 200
    # keep-alive requests: GET, POST of a small and of a spooled body, an
    # app error, a streamed response, wsgi.errors, the write() callable
    with client.connect(server.address, timeout=20) as sock:
        parser = p.RecordParser()
        for method, target, body in [("GET", "/", b""), ("POST", "/", b"x" * 1000),
                                     ("POST", "/", b"y" * 300_000), ("GET", "/raise", b""),
                                     ("GET", "/stream?n=20&size=70000", b""), ("GET", "/stderr", b""),
                                     ("GET", "/write", b"")] * 3:
            sock.sendall(client.encode_request(1, client.cgi_params(method, target, body_length=len(body)),
                                               body, keep_conn=True))
            assert client.read_response(sock, 1, parser).status in (200, 500)
    # a connection per request, and one the peer resets mid-body
    for _ in range(5):
        _get(server.address, "/")
    with client.connect(server.address) as sock:
        sock.sendall(p.encode_begin_request(1, p.RESPONDER, 0)
                     + p.encode_params(1, client.cgi_params("POST", "/", body_length=5000))
                     + p.encode_record(p.STDIN, 1, b"z" * 100))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    garbage = json.loads(_get(server.address, "/gc/garbage").body)
    ours = {name: count for name, count in garbage.items() if name.startswith("wsgi_fcgi.")}
    assert not ours, "objects left to the cyclic GC: %r" % garbage
