"""--max-worker-memory: a worker whose resident memory passes the limit
finishes its requests and is replaced, with nginx (the shipped config, kept-
alive connections) in front and a client that never sees a failure."""

from support import PostLoop, process_stats, wait_children, wait_for

LIMIT_MIB = 60


def test_a_leaking_worker_is_replaced_without_a_failed_request(start_site):
    url, server = start_site("wsgi-fcgi-tcp.conf", "leakapp:app", "--workers", "2", "--threads", "4",
                             "--max-worker-memory", "%dM" % LIMIT_MIB)
    first = wait_children(server.pid, 2)
    assert all(process_stats(pid)["rss_kib"] < LIMIT_MIB << 10 for pid in first)
    loop = PostLoop(url + "/leak?kb=2048")  # 2 MiB kept per request
    wait_for(lambda: server.log().count("above --max-worker-memory") >= 5 or loop.failures, 40,
             interval=0.2, what="five workers retired for their memory")
    loop.stop()
    assert not loop.failures, loop.failures[:5]
    served_by = {int(body.split()[0]) for body in loop.bodies}
    assert len(served_by) >= 4 and first <= served_by  # the first two workers and replacements
    leaked_mib = max(int(body.split()[1]) for body in loop.bodies) >> 10
    assert leaked_mib < LIMIT_MIB, server.log()[-3000:]  # retired within a second of passing the limit, not left to grow
    now = wait_children(server.pid, 2)
    assert not now & first
    assert "Traceback" not in server.log()
