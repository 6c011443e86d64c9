"""Soak: steady load through nginx into `wsgi_fcgi --workers 2` while a fault
injector aborts requests, closes connections mid-response, sends
FCGI_ABORT_REQUEST, makes the app raise, and SIGKILLs workers.

Every request that was not deliberately faulted must succeed; afterwards the
workers' memory, open files and threads are back to their baseline, and the
app's close() ran for every stream that was cut (on a worker still alive).

SOAK_SECONDS sets the length (default 120, as in CI); e.g. SOAK_SECONDS=1800 for a long run.
Two more: keep-alive POSTs through nginx while workers recycle and reload
beside hostile peers, and while the master gets a storm of signals (HUP,
TTIN, TTOU, USR2 upgrades).
"""

import collections
import hashlib
import os
import random
import signal
import socket
import threading
import time

import pytest
import requests
from support import (
    FcgiConnection,
    Nginx,
    children_of,
    fastcgi_location,
    free_port,
    process_gone,
    process_stats,
    read_pid,
    shipped_nginx_conf,
    wait_children,
    wait_for,
    worker_pids,
)

from wsgi_fcgi import client
from wsgi_fcgi import protocol as p

SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
#: the keep-alive soak (recycling, reloads, hostile peers; nginx retries nothing)
KEEPALIVE_SECONDS = float(os.environ.get("SOAK_KEEPALIVE_SECONDS", "40"))
#: the signal storm (HUP, TTIN, TTOU every 0.2 s, USR2 every 3 s)
STORM_SECONDS = float(os.environ.get("SOAK_STORM_SECONDS", "12"))
LOAD_THREADS = 3
FAULT_THREADS = 2  # the first also SIGKILLs a worker every 3-6 s
WORKERS = 2

# nginx retries a request whose worker was killed before it answered, on the
# same listening socket (listed twice: nginx does not retry a lone server).
UPSTREAM = """
upstream soak {{
    server {address} max_fails=0;
    server {address} max_fails=0;
}}
"""
LOCATION_EXTRA = "fastcgi_next_upstream error timeout invalid_header non_idempotent;"


class Figures:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.lost = []  # unfaulted requests that failed: must stay empty
        self.faults = {"client-abort": 0, "mid-response-close": 0, "fcgi-abort": 0, "app-raise": 0,
                       "sigkill": 0}
        self.kill_times = []
        self.stream_ids = []  # (id, start, end) of streams we cut

    def count(self, fault):
        with self.lock:
            self.faults[fault] += 1


def steady_load(url, figures, stop, seed):
    rng = random.Random(seed)
    session = requests.Session()
    while not stop.is_set():
        body = rng.randbytes(rng.choice([0, 100, 5000, 70000]))
        try:
            r = session.post(url + "/echo", data=body, timeout=20)
            good = (r.status_code == 200 and r.json()["body_sha256"] == hashlib.sha256(body).hexdigest())
            failure = None if good else "%d %s" % (r.status_code, r.text[:200])
        except (requests.RequestException, ValueError) as exc:
            failure = repr(exc)
        with figures.lock:
            if failure:
                figures.lost.append(failure)
            else:
                figures.ok += 1


def fault_client_abort(ctx):
    try:
        requests.get(ctx["url"] + "/sleep?s=1", timeout=0.3)
    except requests.RequestException:
        pass


def fault_mid_response_close(ctx):
    """A browser that reads part of a streamed response through nginx, then leaves."""
    ident = "http-%d" % ctx["rng"].randrange(1 << 30)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", ctx["nginx_port"]), timeout=10) as sock:
        sock.sendall(b"GET /slow-stream?n=40&id=%s HTTP/1.1\r\nHost: x\r\n\r\n" % ident.encode())
        sock.recv(100)
    ctx["figures"].stream_ids.append((ident, started, time.monotonic()))


def fault_fcgi_close_or_abort(ctx):
    """The web server itself resets a connection mid-response, or sends FCGI_ABORT_REQUEST."""
    rng = ctx["rng"]
    ident = "fcgi-%d" % rng.randrange(1 << 30)
    started = time.monotonic()
    with FcgiConnection(ctx["address"], timeout=10) as conn:
        conn.send_request(1, "/slow-stream?n=40&id=" + ident, keep_conn=True)
        while not any(r.type == p.STDOUT for r in conn.records):
            if not conn.receive():
                break
        if rng.random() < 0.5:
            conn.send(p.encode_record(p.ABORT_REQUEST, 1))
            conn.wait_ended(1)  # spec 5.4: the aborted request still ends
            fault = "fcgi-abort"
        else:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # reset
            fault = "mid-response-close"
    ctx["figures"].stream_ids.append((ident, started, time.monotonic()))
    return fault


def fault_app_raise(ctx):
    r = requests.get(ctx["url"] + "/raise", timeout=10)
    assert r.status_code == 500 and b"secret" not in r.content


def fault_sigkill(ctx):
    pids = worker_pids(ctx["address"])
    if len(pids) == WORKERS:
        os.kill(rng_choice(ctx["rng"], pids), signal.SIGKILL)
        ctx["figures"].kill_times.append(time.monotonic())
        return True
    return False


def rng_choice(rng, items):
    return rng.choice(sorted(items))


def inject_faults(ctx, stop, seed, kills):
    rng = ctx["rng"] = random.Random(seed)
    figures = ctx["figures"]
    next_kill = time.monotonic() + 4 if kills else float("inf")
    while not stop.is_set():
        time.sleep(rng.uniform(0.05, 0.3))
        try:
            if time.monotonic() >= next_kill:
                if fault_sigkill(ctx):
                    figures.count("sigkill")
                next_kill = time.monotonic() + rng.uniform(3, 6)
                continue
            choice = rng.randrange(4)
            if choice == 0:
                fault_client_abort(ctx)
                figures.count("client-abort")
            elif choice == 1:
                fault_mid_response_close(ctx)
                figures.count("mid-response-close")
            elif choice == 2:
                figures.count(fault_fcgi_close_or_abort(ctx))
            else:
                fault_app_raise(ctx)
                figures.count("app-raise")
        except (OSError, requests.RequestException, ConnectionError):
            pass  # a fault may itself fail when a kill lands on it: it was deliberate either way


def workers_stats(address):
    return {pid: process_stats(pid) for pid in worker_pids(address)}


def warm_up(url, address):
    session = requests.Session()
    for _ in range(60):
        assert session.post(url + "/echo", data=b"w" * 70000, timeout=10).status_code == 200
    wait_for(lambda: len(worker_pids(address)) == WORKERS, 20, what="%d workers" % WORKERS)


@pytest.mark.timeout(SECONDS + 120)
def test_soak_with_faults_loses_no_request(start_wsgi_fcgi, start_nginx):
    server = start_wsgi_fcgi("soakapp:app", "--workers", str(WORKERS), "--threads", "4",
                             "--status-path", "/status", "--log-level", "info")
    nginx = start_nginx(fastcgi_location("soak", extra=LOCATION_EXTRA),
                        http_conf=UPSTREAM.format(address=server.address))
    warm_up(nginx.url, server.address)
    baseline = workers_stats(server.address)
    figures = Figures()
    ctx = {"url": nginx.url, "nginx_port": nginx.port, "address": server.address,
           "figures": figures}
    stop = threading.Event()
    threads = [threading.Thread(target=steady_load, args=(nginx.url, figures, stop, seed), daemon=True)
               for seed in range(LOAD_THREADS)]
    threads += [threading.Thread(target=inject_faults, args=(dict(ctx), stop, seed, seed == 0), daemon=True)
                for seed in range(FAULT_THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)

    total_faults = sum(figures.faults.values())
    print("\nsoak %.0f s: %d requests ok, faults injected %r (total %d), requests lost %d"
          % (SECONDS, figures.ok, figures.faults, total_faults, len(figures.lost)))
    assert not figures.lost, figures.lost[:10]
    assert figures.ok > 20 * SECONDS / 10
    assert figures.faults["sigkill"] >= 1 and total_faults >= SECONDS

    # close() ran for every cut stream, except those a SIGKILL may have taken with it
    def unclosed():
        log = server.log()
        return [ident for ident, start, end in figures.stream_ids
                if "closed %s\n" % ident not in log
                and not any(start - 1 <= kill <= end + 3 for kill in figures.kill_times)]
    wait_for(lambda: not unclosed(), 15, what="close() of every cut stream")

    # the workers come back to their baseline: memory, open files, threads
    def settled():
        try:
            stats = workers_stats(server.address)
        except ProcessLookupError:  # a worker recycled between the status page and /proc
            return None
        if len(stats) != WORKERS:
            return None
        top = {key: max(s[key] for s in baseline.values()) for key in ("rss_kib", "fds", "threads")}
        if all(s["fds"] <= top["fds"] + 2 and s["threads"] <= top["threads"]
               and s["rss_kib"] <= top["rss_kib"] + 40 * 1024 for s in stats.values()):
            return stats
        return None
    try:
        wait_for(settled, 20, interval=0.5, what="workers back to baseline")
    except TimeoutError:
        raise AssertionError("baseline %r, now %r" % (baseline, workers_stats(server.address))) from None
    # and they still serve
    assert requests.post(nginx.url + "/echo", data=b"after", timeout=10).status_code == 200


def test_abort_and_disconnect_free_the_only_thread_and_close_the_app(start_wsgi_fcgi):
    """With one thread, a cut stream must give the thread back at once, close() called."""
    server = start_wsgi_fcgi("soakapp:app", "--no-master", "--threads", "1")
    for how in ("fcgi-abort", "reset", "half-close"):
        ident = "only-thread-" + how
        conn = FcgiConnection(server.address, timeout=10)
        conn.send_request(1, "/slow-stream?n=400&id=" + ident, keep_conn=True)  # 20 s if not cut
        while not any(r.type == p.STDOUT for r in conn.records):
            assert conn.receive()
        started = time.monotonic()
        if how == "fcgi-abort":
            conn.send(p.encode_record(p.ABORT_REQUEST, 1))
            conn.wait_ended(1)
        elif how == "reset":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        else:
            conn.sock.shutdown(socket.SHUT_WR)
        conn.close()
        response = client.request(server.address, "POST", "/echo", body=b"next", timeout=10)
        assert response.status == 200 and time.monotonic() - started < 3, how
        wait_for(lambda ident=ident: "closed %s\n" % ident in server.log(), 5, what="close() after " + how)



def timed_post_loop(url, stop, latencies, failures, seed):
    rng = random.Random(seed)
    session = requests.Session()
    while not stop.is_set():
        body = rng.randbytes(rng.choice([10, 2000, 40000]))
        started = time.monotonic()
        try:
            r = session.post(url + "/echo", data=body, timeout=20)
            if r.status_code != 200 or r.json()["body_sha256"] != hashlib.sha256(body).hexdigest():
                failures.append("%d %s" % (r.status_code, r.text[:200]))
        except (requests.RequestException, ValueError) as exc:
            failures.append(repr(exc))
        latencies.append(time.monotonic() - started)


def non_reading_peer(address, stop):
    """Pipelines requests for large responses and reads nothing, over and over."""
    while not stop.is_set():
        with socket.create_connection(address.rsplit(":", 1), timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"".join(client.encode_request(i, client.cgi_params("GET", "/stream?n=30&size=65536"),
                                                        keep_conn=True) for i in range(1, 9)))
            stop.wait(3)


def slow_body_peer(address, stop):
    """Sends a request whose body trickles a few bytes a second."""
    while not stop.is_set():
        with FcgiConnection(address, timeout=5) as conn:
            conn.send(p.encode_begin_request(1, p.RESPONDER, p.KEEP_CONN)
                      + p.encode_params(1, client.cgi_params("POST", "/echo", body_length=100)))
            for _ in range(20):
                if stop.wait(0.5):
                    break
                try:
                    conn.send(p.encode_record(p.STDIN, 1, b"x"))
                except OSError:
                    break


@pytest.mark.timeout(KEEPALIVE_SECONDS + 120)
def test_soak_keepalive_posts_through_recycling_reloads_and_hostile_peers(start_wsgi_fcgi, tmp_path):
    """Keep-alive POSTs through the shipped nginx config (which retries no
    POST) while workers recycle and reload, and a non-reading peer and a
    slow-body peer hammer the same workers: no request fails, and the
    unrelated requests' p99 stays under a second."""
    server = start_wsgi_fcgi("soakapp:app", "--workers", str(WORKERS), "--threads", "4", "--max-requests", "300",
                             "--max-requests-jitter", "50", "--write-timeout", "3", "--body-timeout", "3")
    port = free_port()
    nginx = Nginx(tmp_path / "nginx-keepalive-soak", None,
                  shipped_nginx_conf("wsgi-fcgi-tcp.conf", port, [server.address]), port=port)
    stop = threading.Event()
    latencies, failures = [], []
    threads = [threading.Thread(target=timed_post_loop, args=(nginx.url, stop, latencies, failures, seed),
                                daemon=True) for seed in range(8)]
    threads += [threading.Thread(target=non_reading_peer, args=(server.address, stop), daemon=True),
                threading.Thread(target=slow_body_peer, args=(server.address, stop), daemon=True)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + KEEPALIVE_SECONDS
        hups = 0
        while time.monotonic() < deadline:
            time.sleep(3)
            server.send_signal(signal.SIGHUP)
            hups += 1
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        nginx.stop()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("inf")
    print("\nkeep-alive soak %.0f s: %d requests, %d failed, p99 %.3f s, %d HUPs, %d recycles"
          % (KEEPALIVE_SECONDS, len(latencies), len(failures), p99, hups, server.log().count("--max-requests")))
    assert not failures, failures[:5]
    assert len(latencies) > 30 * KEEPALIVE_SECONDS
    assert p99 < 1.0


@pytest.mark.timeout(STORM_SECONDS + 120)
def test_a_storm_of_reloads_upgrades_and_resizes_loses_no_post(start_site, tmp_path):
    """HUP, TTIN and TTOU every 0.2 s and a USR2 upgrade every 3 s, each sent
    to the master the pid file names then (an operator's deploy script in a
    loop), while keep-alive POSTs go through the shipped nginx config (which
    retries no POST), bodies past --spool-size among them, and workers
    recycle: no request fails, and one master is left, its log clean."""
    pid_file = tmp_path / "master.pid"
    url, server = start_site("wsgi-fcgi-tcp.conf", "soakapp:app", "--workers", "2", "--threads", "4",
                             "--max-requests", "40", "--spool-size", "16K", "--pid", str(pid_file))
    wait_children(server.pid, 2)
    stop = threading.Event()
    latencies, failures = [], []
    posters = [threading.Thread(target=timed_post_loop, args=(url, stop, latencies, failures, seed), daemon=True)
               for seed in range(4)]
    rng = random.Random(14)
    sent = collections.Counter()
    masters = {server.pid}
    try:
        for thread in posters:
            thread.start()
        deadline = time.monotonic() + STORM_SECONDS
        next_upgrade = time.monotonic() + 2
        while time.monotonic() < deadline:
            time.sleep(0.2)
            name = rng.choice(["HUP", "HUP", "TTIN", "TTOU"])
            if time.monotonic() >= next_upgrade:
                name, next_upgrade = "USR2", time.monotonic() + 3
            pid = read_pid(pid_file)
            if pid is None:  # moved to .oldbin, the new master's not written yet
                continue
            try:
                os.kill(pid, getattr(signal, "SIG" + name))
            except ProcessLookupError:
                continue
            sent[name] += 1
            masters.add(pid)
        stop.set()
        for thread in posters:
            thread.join(30)
        final = wait_for(lambda: not (tmp_path / "master.pid.oldbin").exists() and read_pid(pid_file), 60,
                         interval=0.1, what="one master after the storm")
        masters.add(final)
        wait_for(lambda: all(process_gone(pid) for pid in masters - {final}), 60, interval=0.1,
                 what="the old masters gone")
        assert children_of(final)
        assert requests.get(url + "/echo", timeout=10).status_code == 200
    finally:
        stop.set()
        left = [pid for pid in masters - {server.pid} if not process_gone(pid)]
        for pid in left:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: all(process_gone(pid) for pid in left), 30, interval=0.1, what="the masters stopped")
    print("\nsignal storm %.0f s: %d requests, %d failed, signals %s, %d masters"
          % (STORM_SECONDS, len(latencies), len(failures), dict(sent), len(masters)))
    assert not failures, failures[:5]
    assert sent["USR2"] >= 2 and sent["HUP"] >= 10 and len(masters) >= 3
    assert len(latencies) > 10 * STORM_SECONDS
    log = server.log()  # every master writes to it
    assert "Traceback" not in log and "ERROR" not in log and "cannot listen" not in log
