"""The pool status page (`--status-path`) and ping (`--ping-path`), php-fpm style.

Answered by the worker that gets the request, from the scoreboard that all
workers share; the request never reaches the app.  Formats: plain text by
default, `?json`, `?openmetrics` (Prometheus/OpenMetrics exposition, ending
with `# EOF`).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Callable, Optional

from .scoreboard import Scoreboard

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


def collect(pool: str, scoreboard: Scoreboard, sockets: list) -> dict:
    now_wall, now = time.time(), time.monotonic()
    workers = []
    for slot in scoreboard.workers():
        age = slot.request_age(now)
        workers.append({
            "pid": slot.pid, "state": slot.state_name, "start_time": int(slot.started),
            "requests": slot.requests, "active_threads": slot.active, "threads": slot.threads,
            "max_active_threads": slot.max_active, "slow_requests": slot.slow_requests,
            "timed_out_requests": slot.timed_out,
            "request_method": slot.method.decode("latin-1") if age is not None else "",
            "request_uri": slot.uri.decode("latin-1") if age is not None else "",
            "request_duration": round(age, 3) if age is not None else 0.0,
        })
    waiting, backlog = listen_queue(sockets)
    started = scoreboard.started
    active = sum(w["active_threads"] for w in workers)
    total = sum(w["threads"] for w in workers)
    return {
        "pool": pool,
        "start_time": int(started),
        "start_since": int(now_wall - started),
        "accepted_requests": sum(w["requests"] for w in workers),
        "listen_queue": waiting,
        "listen_queue_len": backlog,
        "workers": len(workers),
        "active_threads": active,
        "idle_threads": max(0, total - active),
        "total_threads": total,
        "max_active_threads": sum(w["max_active_threads"] for w in workers),
        "slow_requests": sum(w["slow_requests"] for w in workers),
        "timed_out_requests": sum(w["timed_out_requests"] for w in workers),
        "worker_list": workers,
    }


_POOL_LABELS = [
    ("pool", "pool"), ("start_time", "start time"), ("start_since", "start since"),
    ("accepted_requests", "accepted requests"), ("listen_queue", "listen queue"),
    ("listen_queue_len", "listen queue len"), ("workers", "workers"),
    ("active_threads", "active threads"), ("idle_threads", "idle threads"),
    ("total_threads", "total threads"), ("max_active_threads", "max active threads"),
    ("slow_requests", "slow requests"), ("timed_out_requests", "timed out requests"),
]


def render_text(data: dict) -> str:
    lines = ["%-20s %s" % (label + ":", data[key]) for key, label in _POOL_LABELS]
    for worker in data["worker_list"]:
        lines.append("")
        lines.append("%-20s %s" % ("pid:", worker["pid"]))
        for key in ("state", "start_time", "requests", "active_threads", "max_active_threads",
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

    metric("start_time_seconds", "gauge", "When the master started (Unix time).", [(pool, data["start_time"])])
    metric("accepted_requests", "counter", "Requests served by the live workers.",
           [(pool, data["accepted_requests"])])
    metric("listen_queue", "gauge", "Connections waiting in the listen backlog.", [(pool, data["listen_queue"])])
    metric("listen_queue_length", "gauge", "Size of the listen backlog.", [(pool, data["listen_queue_len"])])
    metric("workers", "gauge", "Live worker processes.", [(pool, data["workers"])])
    metric("active_threads", "gauge", "Request threads running a request.", [(pool, data["active_threads"])])
    metric("idle_threads", "gauge", "Request threads waiting for a request.", [(pool, data["idle_threads"])])
    metric("max_active_threads", "gauge", "Sum over workers of the most threads busy at once.",
           [(pool, data["max_active_threads"])])
    metric("slow_requests", "counter", "Requests that ran past --slow-request-timeout.",
           [(pool, data["slow_requests"])])
    metric("timed_out_requests", "counter", "Requests stopped by --request-timeout.",
           [(pool, data["timed_out_requests"])])
    per_worker = [(w, '%s,pid="%d",state="%s"' % (pool, w["pid"], w["state"])) for w in data["worker_list"]]
    metric("worker_requests", "counter", "Requests served by one worker.",
           [(labels, w["requests"]) for w, labels in per_worker])
    metric("worker_active_threads", "gauge", "Busy threads of one worker.",
           [(labels, w["active_threads"]) for w, labels in per_worker])
    metric("worker_request_duration_seconds", "gauge", "Age of the worker's oldest running request.",
           [(labels, w["request_duration"]) for w, labels in per_worker])
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _respond(start_response, body: str, content_type: str):
    data = body.encode("utf-8")
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data))),
                              ("Cache-Control", "no-store")])
    return [data]


class StatusPages:
    """WSGI middleware answering the status and ping paths before the app."""

    def __init__(self, app, *, status_path: Optional[str], ping_path: Optional[str], pool: str,
                 scoreboard: Scoreboard, sockets: list, refresh: Callable[[], None]) -> None:
        self.app = app
        self.status_path = status_path
        self.ping_path = ping_path
        self.pool = pool
        self.scoreboard = scoreboard
        self.sockets = sockets
        self.refresh = refresh  # publishes this worker's slot first, so its own numbers are current

    def __call__(self, environ, start_response):
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if path == self.ping_path:
            return _respond(start_response, "pong\n", "text/plain; charset=utf-8")
        if path == self.status_path:
            self.refresh()
            data = collect(self.pool, self.scoreboard, self.sockets)
            flags = {part.partition("=")[0] for part in environ.get("QUERY_STRING", "").split("&")}
            if "json" in flags:
                return _respond(start_response, json.dumps(data, indent=1) + "\n", "application/json")
            if "openmetrics" in flags:
                return _respond(start_response, render_openmetrics(data), OPENMETRICS_TYPE)
            return _respond(start_response, render_text(data), "text/plain; charset=utf-8")
        return self.app(environ, start_response)
