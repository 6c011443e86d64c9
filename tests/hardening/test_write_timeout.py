"""--write-timeout: a web server that stops reading a response is dropped,
and serving goes on meanwhile."""

import socket
import time

from support import wait_for

from wsgi_fcgi import client


def test_a_peer_that_stops_reading_is_dropped_after_the_write_timeout(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--threads", "2", "--write-timeout", "1")
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        params = client.cgi_params("GET", "/stream?n=400&size=65536")  # 25 MiB, never read
        stuck.sendall(client.encode_request(1, params, keep_conn=True))
        started = time.monotonic()
        response = client.request(server.address, "GET", "/meanwhile", timeout=5)
        assert response.status == 200
        wait_for(lambda: "did not read" in server.log(), 15, what="the write timeout log line")
        assert time.monotonic() - started < 12
    assert client.request(server.address, "GET", "/after", timeout=5).status == 200
    assert "Traceback" not in server.log()
