"""The status page's metrics as a monitoring stack reads them: counters that
never go down across recycling, reloads and crashes; outcomes, latency and
bytes, parsed with prometheus_client's OpenMetrics parser; every view with
the same figures."""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support import wait_for

from wsgi_fcgi import client, protocol, status
from wsgi_fcgi.scoreboard import READY, Counters, Scoreboard, Slot

STATUS = ("--status-path", "/fcgi-status")
POOL = (("pool", "metricsapp:app"),)
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


class Pool:
    """Requests and scrapes over FastCGI, counting every request sent."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sent = 0

    def request(self, target: str, method: str = "GET", body: bytes = b"") -> client.Response:
        response = client.request(self.address, method, target, body=body, timeout=20)
        self.sent += 1
        return response

    def scrape(self) -> tuple:
        """(requests sent before this scrape, {(sample name, labels): value}, {family: type})"""
        before = self.sent
        response = self.request("/fcgi-status?openmetrics")
        assert response.status == 200
        samples, types = {}, {}
        for family in text_string_to_metric_families(response.body.decode()):
            types[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return before, samples, types

    def settled_scrape(self) -> tuple:
        """A scrape that counts every request sent before it: a request is
        counted just after its response went out, so a scrape served by
        another worker at once may miss the one before."""
        def scrape():
            before, samples, types = self.scrape()
            return (before, samples, types) if samples[("wsgi_fcgi_accepted_requests_total", POOL)] == before else None
        return wait_for(scrape, 10, interval=0.05, what="a scrape counting every request before it")

    def figures(self) -> dict:
        response = self.request("/fcgi-status?json")
        assert response.status == 200
        return json.loads(response.body)


def _counters(samples: dict) -> dict:
    return {key: value for key, value in samples.items() if key[0].endswith(COUNTER_SUFFIXES)}


def test_counters_never_go_down_across_recycling_reload_and_a_killed_worker(start_wsgi_fcgi):
    server = start_wsgi_fcgi("metricsapp:app", "--workers", "2", "--max-requests", "3", *STATUS)
    pool = Pool(server.address)
    seen: dict = {}
    accepted_series = []

    def scrape_and_check() -> bool:
        before, samples, _ = pool.scrape()
        for key, value in _counters(samples).items():
            assert value >= seen.get(key, 0), "%s went down: %s -> %s" % (key, seen[key], value)
            seen[key] = value
        accepted = samples[("wsgi_fcgi_accepted_requests_total", POOL)]
        accepted_series.append(accepted)
        assert accepted <= before  # a request is counted once it ended
        return accepted == before

    for round_number in range(8):
        for _ in range(3):
            assert pool.request("/").body == b"hello"
        scrape_and_check()
        if round_number == 3:
            os.kill(server.pid, signal.SIGHUP)
        if round_number == 5:
            _kill_a_worker(pool)
    wait_for(scrape_and_check, 20, interval=0.1, what="every request counted")
    _, samples, _ = pool.scrape()
    accepted = samples[("wsgi_fcgi_accepted_requests_total", POOL)]
    assert accepted >= 8 * 3 + 8 + 1  # app requests and scrapes: nothing lost to the recycling
    assert samples[("wsgi_fcgi_responses_total", POOL + (("status_class", "2xx"),))] == accepted
    assert samples[("wsgi_fcgi_request_duration_seconds_count", POOL)] == accepted
    log = server.log()
    assert "--max-requests" in log and "died unexpectedly (signal SIGKILL)" in log
    assert accepted_series == sorted(accepted_series)


def _kill_a_worker(pool: Pool) -> None:
    """SIGKILL the worker that served a request (with --max-requests it may
    have retired and exited meanwhile: then another one)."""
    for _ in range(10):
        victim = int(pool.request("/pid").body)
        time.sleep(0.3)  # its counters are published at the end of each request
        try:
            os.kill(victim, signal.SIGKILL)
            return
        except ProcessLookupError:
            continue
    raise AssertionError("every worker that served /pid had exited before it could be killed")


def test_outcomes_latency_and_bytes_parsed_as_openmetrics(start_wsgi_fcgi):
    server = start_wsgi_fcgi("metricsapp:app", "--workers", "2", *STATUS)
    pool = Pool(server.address)
    codes = (200, 200, 302, 304, 404, 404, 500, 503, 418)
    for code in codes:
        assert pool.request("/status/%d" % code).status == code
    assert pool.request("/body", "POST", b"x" * 5000).body == b"5000"
    assert pool.request("/sleep?s=0.3").body == b"slept"

    def app_requests_counted():  # figures the status requests never touch
        data = pool.figures()
        return data if data["responses_by_code"]["404"] == 2 and data["bytes_received"] == 5000 else None
    wait_for(app_requests_counted, 10, interval=0.1, what="the app requests counted")

    before, samples, types = pool.settled_scrape()
    assert types["wsgi_fcgi_accepted_requests"] == "counter"
    assert types["wsgi_fcgi_request_duration_seconds"] == "histogram"
    assert types["wsgi_fcgi_worker_state"] == "gauge"
    by_code = {dict(labels)["code"]: value for (name, labels), value in samples.items()
               if name == "wsgi_fcgi_responses_by_code_total"}
    assert by_code["302"] == by_code["304"] == by_code["500"] == by_code["503"] == 1 and by_code["404"] == 2
    assert by_code["200"] == before - 7  # all but the 7 other answers above (418 has no code series)
    by_class = {dict(labels)["status_class"]: value for (name, labels), value in samples.items()
                if name == "wsgi_fcgi_responses_total"}
    assert by_class == {"1xx": 0, "2xx": before - 7, "3xx": 2, "4xx": 3, "5xx": 2, "none": 0}
    assert samples[("wsgi_fcgi_accepted_requests_total", POOL)] == before
    assert samples[("wsgi_fcgi_received_bytes_total", POOL)] == 5000
    assert samples[("wsgi_fcgi_sent_bytes_total", POOL)] > 11 * len("status 200")

    buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value in samples.items()
                     if name == "wsgi_fcgi_request_duration_seconds_bucket")
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), before)
    assert samples[("wsgi_fcgi_request_duration_seconds_count", POOL)] == before
    below_quarter = dict(buckets)[0.25]
    assert below_quarter <= before - 1  # the 0.3 s request
    assert samples[("wsgi_fcgi_request_duration_seconds_sum", POOL)] >= 0.3

    states = {dict(labels)["pid"]: value for (name, labels), value in samples.items()
              if name == "wsgi_fcgi_worker_state"}
    assert len(states) == 2 and sorted(states.values()) == [0, 1]  # one idle, one busy: this scrape
    assert samples[("wsgi_fcgi_idle_threads", POOL)] + samples[("wsgi_fcgi_active_threads", POOL)] == 16
    assert ("wsgi_fcgi_listen_queue", POOL) in samples


def _scoreboard_with_traffic() -> Scoreboard:
    board = Scoreboard(4)
    for index, (pid, active) in enumerate(((101, 0), (102, 2))):
        board.write(index, Slot(pid=pid, state=READY, started=1.0e9, heartbeat=time.monotonic(), active=active,
                                threads=4, max_active=3, request_since=time.monotonic() - 1.5 if active else 0.0,
                                method=b"GET", uri=b"/search?token=secret"))
        counters = Counters()
        for status_line, duration in (("200 OK", 0.002), ("404 Not Found", 0.2), (None, 3.0), ("503 X", 45.0)):
            counters.count_request(status_line, status_line is None, 100, 1000, duration)
        counters["slow_requests"] = index
        board.write_counters(index, counters)
        board.set_connections(index, 5 + index, shared=4)
    board.write(2, Slot(pid=103, state=READY, threads=4))
    board.write_counters(2, board.read_counters(0))
    board.fold(2)  # a reaped worker: its counters stay in the pool's totals
    return board


def test_text_json_openmetrics_and_html_views_show_the_same_figures():
    data = status.collect("shop", _scoreboard_with_traffic(), [])
    data = json.loads(json.dumps(data))  # what ?json serves
    assert data["accepted_requests"] == 12 and data["workers"] == 2
    assert data["responses_by_class"] == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 6, "5xx": 3, "none": 0}
    assert data["responses_by_code"]["499"] == 3  # aborted before a status
    assert data["bytes_received"] == 1200 and data["bytes_sent"] == 12000
    assert data["slow_requests"] == 1
    assert [w["connections"] for w in data["worker_list"]] == [5, 6] and data["connections"] == 11
    assert [w["request_uri"] for w in data["worker_list"]] == ["", "/search"]  # no query string

    families = {f.name: f for f in text_string_to_metric_families(status.render_openmetrics(data))}
    samples = [sample for family in families.values() for sample in family.samples]

    def value(name, **labels):
        found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    assert value("wsgi_fcgi_accepted_requests_total") == data["accepted_requests"]
    for name, count in data["responses_by_class"].items():
        assert value("wsgi_fcgi_responses_total", status_class=name) == count
    for code, count in data["responses_by_code"].items():
        assert value("wsgi_fcgi_responses_by_code_total", code=code) == count
    assert value("wsgi_fcgi_received_bytes_total") == data["bytes_received"]
    assert value("wsgi_fcgi_sent_bytes_total") == data["bytes_sent"]
    histogram = data["request_duration_seconds"]
    hist = families["wsgi_fcgi_request_duration_seconds"]
    om_buckets = [(s.labels["le"], s.value) for s in hist.samples if s.name.endswith("_bucket")]
    assert om_buckets == [(bound if bound == "+Inf" else repr(float(bound)), count)
                          for bound, count in histogram["buckets"]]
    assert dict(histogram["buckets"])["30.0"] == 9 and histogram["count"] == 12
    assert value("wsgi_fcgi_request_duration_seconds_sum") == histogram["sum"]
    for worker in data["worker_list"]:
        assert value("wsgi_fcgi_worker_state", pid=str(worker["pid"])) == status.STATE_VALUES[worker["state"]]
        assert value("wsgi_fcgi_worker_requests_total", pid=str(worker["pid"])) == worker["requests"]
        assert value("wsgi_fcgi_worker_connections", pid=str(worker["pid"])) == worker["connections"]
    assert value("wsgi_fcgi_connections") == data["connections"]

    text = status.render_text(data)
    for label, figure in (("accepted requests", 12), ("responses 4xx", 6), ("responses 499", 3),
                          ("bytes sent", 12000), ("connections", 11), ("duration <= +Inf s", 12), ("duration count", 12)):
        assert "%-20s %s" % (label + ":", figure) in text
    page = status.render_html(data)
    assert "<th>responses 4xx</th><td class=\"n\">6</td>" in page
    assert "<th>connections</th><td class=\"n\">11</td>" in page
    assert "/search" in page and "secret" not in page
    shown = status.collect("shop", _scoreboard_with_traffic(), [], show_query=True)
    assert [w["request_uri"] for w in shown["worker_list"]] == ["", "/search?token=secret"]


def test_requests_are_on_the_scoreboard_soon_after_they_end(start_wsgi_fcgi):
    """A worker writes its slot at most every PUBLISH_INTERVAL (50 ms) as
    requests end, and what is left that long after its last write (a slot
    write per round of requests cost 5-20 us): once the answers to 20
    pipelined requests are out, the other worker's status page counts them
    all within that, without waiting for the next tick (1 s).

    Each worker holds one connection (--max-connections 1): the kernel wakes
    both workers for a new connection and whichever runs first takes it, so
    without the limit 40 connections in a row went to one worker in CI."""
    server = start_wsgi_fcgi("metricsapp:app", "--workers", "2", "--max-connections", "1", *STATUS)
    pool = Pool(server.address)
    wait_for(lambda: [w["state"] in ("idle", "busy") for w in pool.figures()["worker_list"]] == [True, True],
             20, what="both workers ready")
    by_worker: dict = {}
    try:
        for request_id in range(1, 41):  # a kept connection to each worker: the second goes to the other
            sock = client.connect(server.address)
            sock.sendall(client.encode_request(request_id, client.cgi_params("GET", "/pid"), keep_conn=True))
            by_worker.setdefault(int(client.read_response(sock, request_id).body), []).append(sock)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "40 connections in a row went to one worker"
        (busy_pid, (busy, *_)), (_, (other, *_)) = by_worker.items()

        def busy_requests() -> int:
            other.sendall(client.encode_request(200, client.cgi_params("GET", "/fcgi-status?json"), keep_conn=True))
            figures = json.loads(client.read_response(other, 200).body)
            return [w["requests"] for w in figures["worker_list"] if w["pid"] == busy_pid][0]

        time.sleep(1.2)  # a tick has published whatever came before
        before = busy_requests()
        busy.sendall(b"".join(client.encode_request(i, client.cgi_params("GET", "/"), keep_conn=True)
                              for i in range(101, 121)))
        parser, ended = protocol.RecordParser(), 0
        while ended < 20:
            ended += sum(r.type == protocol.END_REQUEST for r in parser.feed(busy.recv(65536)))
        # The answers go out before their round ends; a request sent now is
        # read in a later round, so once it is answered the round is over.
        busy.sendall(client.encode_request(121, client.cgi_params("GET", "/"), keep_conn=True))
        client.read_response(busy, 121, parser)
        answered = time.monotonic()
        after = busy_requests()
        while after < before + 20 and time.monotonic() - answered < 0.5:
            time.sleep(0.01)
            after = busy_requests()
        assert time.monotonic() - answered < 0.5, "too slow to tell a deferred write from a tick's"
    finally:
        for sockets in by_worker.values():
            for sock in sockets:
                sock.close()
    assert before + 20 <= after <= before + 21


def test_requests_ending_as_a_worker_stops_are_counted(start_wsgi_fcgi):
    """A stopping worker writes its slot once more before it exits, so the
    master folds every request it served into the pool's totals: also those
    that ended within PUBLISH_INTERVAL of its previous write."""
    server = start_wsgi_fcgi("metricsapp:app", "--workers", "1", *STATUS)
    pool = Pool(server.address)
    pool.settled_scrape()
    with ThreadPoolExecutor(8) as executor:
        answers = [executor.submit(client.request, server.address, "GET", "/sleep?s=0.5", timeout=20)
                   for _ in range(8)]
        time.sleep(0.2)
        os.kill(server.pid, signal.SIGHUP)  # the worker stops once they end
        assert [answer.result().status for answer in answers] == [200] * 8
    pool.sent += 8
    pool.settled_scrape()
