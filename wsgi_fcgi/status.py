"""The pool status page (`--status-path`) and ping (`--ping-path`), php-fpm style.

Answered by the worker that gets the request, from the scoreboard that all
workers share; the request never reaches the app.  Formats: plain text by
default, `?json`, `?openmetrics` (Prometheus/OpenMetrics exposition, ending
with `# EOF`), `?html` (a page that reloads itself).  Every view shows the
same figures, from one `collect()`; docs/observability.md lists them.
"""

from __future__ import annotations

import html
import json
import socket
import struct
import time
from collections.abc import Callable

from .scoreboard import STATUS_CLASSES, STATUS_CODES, Scoreboard

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_TCP_INFO_SIZE = 104


def listen_queue(sockets: list) -> tuple[int, int]:
    """(connections waiting in the backlog, backlog size), summed over TCP
    listeners: Linux reports them as tcpi_unacked / tcpi_sacked of a listening
    socket (what php-fpm shows as "listen queue" / "listen queue len")."""
    waiting = size = 0
    for sock in sockets:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
            continue
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            continue
        unacked, sacked = struct.unpack_from("=II", info, 24)
        waiting += unacked
        size += sacked
    return waiting, size


#: the value of the per-worker state gauge (a value, not a label: no series churn)
STATE_VALUES = {"idle": 0, "busy": 1, "starting": 2, "retiring": 3, "stopping": 4}


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def collect(pool: str, scoreboard: Scoreboard, sockets: list, show_query: bool = False) -> dict:
    """The figures of every view.  Request URIs lose their query string
    unless `show_query` (it may carry other users' tokens)."""
    now_wall, now = time.time(), time.monotonic()
    counters, slots = scoreboard.snapshot()
    workers = []
    for slot, own, connections in slots:
        age = slot.request_age(now)
        uri = slot.uri if show_query else slot.uri.partition(b"?")[0]
        workers.append({
            "pid": slot.pid, "state": slot.state_name, "start_time": int(slot.started),
            "requests": own["requests"], "active_threads": slot.active, "threads": slot.threads,
            "max_active_threads": slot.max_active, "slow_requests": own["slow_requests"],
            "timed_out_requests": own["timed_out"],
            "request_method": slot.method.decode("latin-1") if age is not None else "",
            "request_uri": uri.decode("latin-1") if age is not None else "",
            "request_duration": round(age, 3) if age is not None else 0.0,
            "memory_bytes": slot.rss, "connections": connections,
        })
    waiting, backlog = listen_queue(sockets)
    mode, most, max_reached = scoreboard.pool()
    started = scoreboard.started
    active = sum(w["active_threads"] for w in workers)
    total = sum(w["threads"] for w in workers)
    return {
        "pool": pool,
        "start_time": int(started),
        "start_since": int(now_wall - started),
        "accepted_requests": counters["requests"],
        "listen_queue": waiting,
        "listen_queue_len": backlog,
        "workers": len(workers),
        "process_manager": mode,
        "idle_workers": sum(1 for w in workers if w["state"] == "idle"),
        "active_workers": sum(1 for w in workers if w["state"] == "busy"),
        "max_workers": most or len(workers),  # 0: no master (--no-master)
        "max_workers_reached": max_reached,
        "active_threads": active,
        "idle_threads": max(0, total - active),
        "total_threads": total,
        "max_active_threads": sum(w["max_active_threads"] for w in workers),
        "connections": sum(w["connections"] for w in workers),
        "slow_requests": counters["slow_requests"],
        "timed_out_requests": counters["timed_out"],
        "bytes_received": counters["bytes_in"],
        "bytes_sent": counters["bytes_out"],
        "responses_by_class": {name: counters["class_" + name] for name in STATUS_CLASSES},
        "responses_by_code": {str(code): counters["code_%d" % code] for code in STATUS_CODES},
        "request_duration_seconds": {
            "buckets": [[_bound(bound), count] for bound, count in counters.buckets()],
            "sum": round(counters.duration_sum, 6),
            "count": counters.buckets()[-1][1],
        },
        "worker_list": workers,
    }


_POOL_LABELS = [
    ("pool", "pool"), ("start_time", "start time"), ("start_since", "start since"),
    ("accepted_requests", "accepted requests"), ("listen_queue", "listen queue"),
    ("listen_queue_len", "listen queue len"), ("workers", "workers"),
    ("process_manager", "process manager"), ("idle_workers", "idle workers"),
    ("active_workers", "active workers"), ("max_workers", "max workers"),
    ("max_workers_reached", "max workers reached"),
    ("active_threads", "active threads"), ("idle_threads", "idle threads"),
    ("total_threads", "total threads"), ("max_active_threads", "max active threads"),
    ("connections", "connections"),
    ("slow_requests", "slow requests"), ("timed_out_requests", "timed out requests"),
    ("bytes_received", "bytes received"), ("bytes_sent", "bytes sent"),
]


def _pool_sections(data: dict) -> list:
    """[(section id, [(label, value)])]: every pool figure, for the text and HTML views."""
    duration = data["request_duration_seconds"]
    return [
        ("pool", [(label, data[key]) for key, label in _POOL_LABELS]),
        ("responses", [("responses %s" % name, count) for name, count in data["responses_by_class"].items()]
         + [("responses %s" % code, count) for code, count in data["responses_by_code"].items()]),
        ("durations", [("duration <= %s s" % bound, count) for bound, count in duration["buckets"]]
         + [("duration sum", duration["sum"]), ("duration count", duration["count"])]),
    ]


def _pool_rows(data: dict) -> list:
    return [row for _, rows in _pool_sections(data) for row in rows]


def render_text(data: dict) -> str:
    lines = ["%-20s %s" % (label + ":", value) for label, value in _pool_rows(data)]
    for worker in data["worker_list"]:
        lines.append("")
        lines.append("%-20s %s" % ("pid:", worker["pid"]))
        for key in ("state", "start_time", "requests", "active_threads", "max_active_threads", "connections",
                    "slow_requests", "request_method", "request_uri", "request_duration"):
            lines.append("%-20s %s" % (key.replace("_", " ") + ":", worker[key]))
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_openmetrics(data: dict) -> str:
    pool = 'pool="%s"' % _label(data["pool"])
    out = []

    def metric(name: str, kind: str, help_text: str, samples: list) -> None:
        out.append("# TYPE wsgi_fcgi_%s %s" % (name, kind))
        out.append("# HELP wsgi_fcgi_%s %s" % (name, help_text))
        suffix = "_total" if kind == "counter" else ""
        for labels, value in samples:
            out.append("wsgi_fcgi_%s%s{%s} %s" % (name, suffix, labels, value))

    def pool_metric(name: str, kind: str, help_text: str, key: str) -> None:
        metric(name, kind, help_text, [(pool, data[key])])

    pool_metric("start_time_seconds", "gauge", "When the master started (Unix time).", "start_time")
    pool_metric("accepted_requests", "counter", "Requests served since the master started.", "accepted_requests")
    metric("responses", "counter", "Responses by status class (none: no status was sent).",
           [('%s,status_class="%s"' % (pool, name), count) for name, count in data["responses_by_class"].items()])
    metric("responses_by_code", "counter", "Responses with the common status codes (499: aborted by the "
           "web server before a status).",
           [('%s,code="%s"' % (pool, code), count) for code, count in data["responses_by_code"].items()])
    duration = data["request_duration_seconds"]
    out.append("# TYPE wsgi_fcgi_request_duration_seconds histogram")
    out.append("# HELP wsgi_fcgi_request_duration_seconds Time from the request's params to its end.")
    for bound, count in duration["buckets"]:
        out.append('wsgi_fcgi_request_duration_seconds_bucket{%s,le="%s"} %d' % (pool, bound, count))
    out.append("wsgi_fcgi_request_duration_seconds_count{%s} %d" % (pool, duration["count"]))
    out.append("wsgi_fcgi_request_duration_seconds_sum{%s} %r" % (pool, duration["sum"]))
    pool_metric("received_bytes", "counter", "Request body bytes received (FCGI_STDIN).", "bytes_received")
    pool_metric("sent_bytes", "counter", "Response bytes sent (FCGI_STDOUT: CGI head and body).", "bytes_sent")
    pool_metric("slow_requests", "counter", "Requests that ran past --slow-request-timeout.", "slow_requests")
    pool_metric("timed_out_requests", "counter", "Requests stopped by --request-timeout.", "timed_out_requests")
    pool_metric("listen_queue", "gauge", "Connections waiting in the listen backlog.", "listen_queue")
    pool_metric("listen_queue_length", "gauge", "Size of the listen backlog.", "listen_queue_len")
    pool_metric("workers", "gauge", "Live worker processes.", "workers")
    metric("process_manager", "gauge", "The pool mode (--pm) in the label; always 1.",
           [('%s,mode="%s"' % (pool, data["process_manager"]), 1)])
    pool_metric("idle_workers", "gauge", "Workers running no request.", "idle_workers")
    pool_metric("active_workers", "gauge", "Workers running at least one request.", "active_workers")
    pool_metric("max_workers", "gauge", "The most workers the pool may run (--workers).", "max_workers")
    pool_metric("max_workers_reached", "counter", "Times the pool wanted more workers than --workers "
                "(php-fpm's max children reached).", "max_workers_reached")
    pool_metric("active_threads", "gauge", "Request threads running a request.", "active_threads")
    pool_metric("idle_threads", "gauge", "Request threads waiting for a request.", "idle_threads")
    pool_metric("total_threads", "gauge", "Request threads of the live workers.", "total_threads")
    pool_metric("max_active_threads", "gauge", "Sum over live workers of the most threads busy at once.",
                "max_active_threads")
    pool_metric("connections", "gauge", "Connections the live workers hold (kept ones included).", "connections")
    per_worker = [(w, '%s,pid="%d"' % (pool, w["pid"])) for w in data["worker_list"]]
    metric("worker_state", "gauge", "State of one worker: " + ", ".join(
        "%d %s" % (value, name) for name, value in STATE_VALUES.items()) + ".",
        [(labels, STATE_VALUES.get(w["state"], -1)) for w, labels in per_worker])
    metric("worker_requests", "counter", "Requests served by one worker.",
           [(labels, w["requests"]) for w, labels in per_worker])
    metric("worker_active_threads", "gauge", "Busy threads of one worker.",
           [(labels, w["active_threads"]) for w, labels in per_worker])
    metric("worker_connections", "gauge", "Connections one worker holds (kept ones included).",
           [(labels, w["connections"]) for w, labels in per_worker])
    metric("worker_memory_bytes", "gauge", "Resident memory of one worker (see --max-worker-memory).",
           [(labels, w["memory_bytes"]) for w, labels in per_worker])
    metric("worker_request_duration_seconds", "gauge", "Age of the worker's oldest running request (0: idle).",
           [(labels, w["request_duration"]) for w, labels in per_worker])
    out.append("# EOF")
    return "\n".join(out) + "\n"


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="%(refresh)d">
<title>wsgi-fcgi status: %(pool)s</title>
<style>
body { font: 14px sans-serif; margin: 1em; }
table { border-collapse: collapse; margin: 0 1.5em 1.5em 0; }
table.figures { display: inline-table; vertical-align: top; }
th, td { border: 1px solid #bbb; padding: 2px 8px; text-align: left; }
th { background: #eee; }
td.n { text-align: right; }
tr.busy td { background: #fff3cd; }
</style></head>
<body>
<h1>Pool %(pool)s</h1>
<p>Reloads every %(refresh)d s.  Also as <a href="?json">JSON</a>, <a href="?openmetrics">OpenMetrics</a>,
<a href="?">text</a>.</p>
%(pool_tables)s
<h2>Workers</h2>
<table id="workers"><thead><tr>%(worker_head)s</tr></thead><tbody>
%(worker_rows)s
</tbody></table>
</body></html>
"""
_WORKER_COLUMNS = ("pid", "state", "start_time", "requests", "active_threads", "threads", "max_active_threads",
                   "connections", "slow_requests", "timed_out_requests", "request_method", "request_uri", "request_duration",
                   "memory_bytes")


def _cell(value) -> str:
    numeric = isinstance(value, (int, float))
    return '<td%s>%s</td>' % (' class="n"' if numeric else "", html.escape(str(value)))


def render_html(data: dict, refresh: int = 5) -> str:
    pool_tables = "\n".join(
        '<table class="figures" id="%s"><tbody>\n%s\n</tbody></table>' % (section, "\n".join(
            "<tr><th>%s</th>%s</tr>" % (html.escape(label), _cell(value)) for label, value in rows))
        for section, rows in _pool_sections(data))
    worker_rows = "\n".join(
        '<tr class="%s">%s</tr>' % (html.escape(w["state"]), "".join(_cell(w[key]) for key in _WORKER_COLUMNS))
        for w in data["worker_list"])
    head = "".join("<th>%s</th>" % key.replace("_", " ") for key in _WORKER_COLUMNS)
    return _HTML % {"refresh": refresh, "pool": html.escape(data["pool"]), "pool_tables": pool_tables,
                    "worker_head": head, "worker_rows": worker_rows}


def _respond(start_response, body: str, content_type: str, extra_headers=()):
    data = body.encode("utf-8")
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data))),
                              ("Cache-Control", "no-store"), *extra_headers])
    return [data]


#: the HTML view runs no script and loads nothing
_HTML_HEADERS = (("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                 ("X-Content-Type-Options", "nosniff"))


class StatusPages:
    """WSGI middleware answering the status and ping paths before the app."""

    def __init__(self, app, *, status_path: str | None, ping_path: str | None, pool: str,
                 scoreboard: Scoreboard, sockets: list, refresh: Callable[[], None],
                 show_query: bool = False) -> None:
        self.app = app
        self.status_path = status_path
        self.ping_path = ping_path
        self.pool = pool
        self.scoreboard = scoreboard
        self.sockets = sockets
        self.refresh = refresh  # publishes this worker's slot first, so its own numbers are current
        self.show_query = show_query

    def __call__(self, environ, start_response):
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if path == self.ping_path:
            return _respond(start_response, "pong\n", "text/plain; charset=utf-8")
        if path == self.status_path:
            self.refresh()
            data = collect(self.pool, self.scoreboard, self.sockets, self.show_query)
            flags = {part.partition("=")[0] for part in environ.get("QUERY_STRING", "").split("&")}
            if "json" in flags:
                return _respond(start_response, json.dumps(data, indent=1) + "\n", "application/json")
            if "openmetrics" in flags:
                return _respond(start_response, render_openmetrics(data), OPENMETRICS_TYPE)
            if "html" in flags:
                return _respond(start_response, render_html(data), "text/html; charset=utf-8", _HTML_HEADERS)
            return _respond(start_response, render_text(data), "text/plain; charset=utf-8")
        return self.app(environ, start_response)
