"""The loop thread runs complete requests itself; a long one must not stall
the others (the standby takes the selector over) nor serialise them."""

import json
import threading
import time

from wsgi_fcgi import client


def _timed(address, target):
    started = time.monotonic()
    response = client.request(address, "GET", target, timeout=20)
    return response, time.monotonic() - started


def test_fast_requests_are_not_stuck_behind_a_slow_inline_one(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--threads", "4")
    slow = threading.Thread(target=_timed, args=(server.address, "/sleep?s=2"))
    slow.start()
    time.sleep(0.3)  # the slow request is running (inline or in the pool)
    for _ in range(5):
        response, elapsed = _timed(server.address, "/fast")
        assert response.status == 200
        assert elapsed < 1.0, "a fast request waited %.2f s behind a slow one" % elapsed
    slow.join(10)


def test_slow_requests_still_run_in_parallel(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--threads", "4")
    results = []

    def one():
        results.append(_timed(server.address, "/sleep?s=1"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    elapsed = time.monotonic() - started
    assert [r.status for r, _ in results] == [200] * 4
    assert elapsed < 3.0, "4 one-second requests on 4 threads took %.1f s" % elapsed


def test_requests_that_wait_a_few_milliseconds_overlap(start_wsgi_fcgi):
    """Waits shorter than the standby's takeover (a quick database query)
    would be served one at a time by the loop thread: the pool notices the
    app waits and hands requests to the pool threads."""
    server = start_wsgi_fcgi("envapp:app", "--threads", "8")
    answers = []

    def client_loop():
        for _ in range(12):
            answers.append(client.request(server.address, "GET", "/wait?s=0.006", timeout=20))

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 96 and {a.status for a in answers} == {200}
    peak = max(int(a.body.split()[1]) for a in answers)
    assert peak >= 3, "at most %d waiting requests ran at once on 8 threads" % peak


def test_a_slow_body_upload_is_served_while_the_loop_runs_requests(start_wsgi_fcgi):
    """A request whose body is still arriving goes to a pool thread, and the
    selector keeps feeding it."""
    import socket

    from wsgi_fcgi import protocol as p

    server = start_wsgi_fcgi("envapp:app", "--threads", "2")
    host, port = server.address.rsplit(":", 1)
    params = client.cgi_params("POST", "/upload", body_length=3 * 1000)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(p.encode_begin_request(1) + p.encode_params(1, params))
        for _ in range(3):
            sock.sendall(p.encode_record(p.STDIN, 1, b"a" * 1000))
            time.sleep(0.2)
            assert client.request(server.address, "GET", "/other", timeout=5).status == 200
        sock.sendall(p.encode_record(p.STDIN, 1))
        response = client.read_response(sock, 1)
    assert response.status == 200
    assert b'"body_length": 3000' in response.body


def _trickled_post(address, length, pieces=3):
    import socket

    from wsgi_fcgi import protocol as p

    host, port = address.rsplit(":", 1)
    params = client.cgi_params("POST", "/upload", body_length=length)
    piece = length // pieces
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(p.encode_begin_request(1) + p.encode_params(1, params))
        for index in range(pieces):
            sock.sendall(p.encode_record(p.STDIN, 1, b"b" * (length - piece * (pieces - 1) if index == 0 else piece)))
            time.sleep(0.1)
        sock.sendall(p.encode_record(p.STDIN, 1))
        return json.loads(client.read_response(sock, 1).body)


def test_a_small_body_is_awaited_without_a_thread_then_runs_inline(start_wsgi_fcgi):
    """A body of known length that fits in --spool-size: the request runs
    once it is all here, in the loop thread (no hand-off per piece)."""
    server = start_wsgi_fcgi("envapp:app", "--threads", "4", "--spool-size", "100000")
    answer = _trickled_post(server.address, 30000)
    assert answer["body_length"] == 30000
    assert answer["thread"] == "wsgi-fcgi-loop"


def test_a_request_awaiting_its_body_ends_with_its_connection(start_wsgi_fcgi):
    """Reset mid-body: the request no thread ran still ends (else it would
    count as live forever: with one thread and a queue of one, later
    request would get 503)."""
    import socket
    import struct

    from wsgi_fcgi import protocol as p

    server = start_wsgi_fcgi("envapp:app", "--threads", "1", "--max-queue", "1")
    host, port = server.address.rsplit(":", 1)
    for _ in range(3):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(p.encode_begin_request(1) + p.encode_params(1, client.cgi_params("POST", "/", body_length=5000))
                     + p.encode_record(p.STDIN, 1, b"x" * 100))
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        time.sleep(0.2)
        assert client.request(server.address, "GET", "/after", timeout=10).status == 200


def test_a_body_larger_than_the_spool_size_streams_to_a_pool_thread(start_wsgi_fcgi):
    server = start_wsgi_fcgi("envapp:app", "--threads", "4", "--spool-size", "10000")
    answer = _trickled_post(server.address, 30000)
    assert answer["body_length"] == 30000
    assert answer["thread"].startswith("wsgi-fcgi-") and answer["thread"] != "wsgi-fcgi-loop"


def test_one_thread_means_one_request_at_a_time(start_wsgi_fcgi):
    """--threads 1 is what wsgi.multithread False promises: no second runner."""
    server = start_wsgi_fcgi("envapp:app", "--threads", "1")
    results = []
    threads = [threading.Thread(target=lambda: results.append(_timed(server.address, "/sleep?s=0.6")))
               for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [r.status for r, _ in results] == [200, 200]
    assert time.monotonic() - started >= 1.1
