"""Test app for --max-worker-memory: leaks on purpose.

/leak?kb=N   keeps N KiB more in a module-level list (filled, so resident), then
             answers "<pid> <KiB leaked so far>"; a POST body is read first
anything     "<pid>"
"""

import os
from urllib.parse import parse_qs

LEAKED = []


def app(environ, start_response):
    environ["wsgi.input"].read()
    body = str(os.getpid())
    if environ.get("PATH_INFO") == "/leak":
        kb = int(parse_qs(environ.get("QUERY_STRING", "")).get("kb", ["1024"])[0])
        LEAKED.append(b"\xa5" * (kb * 1024))
        body += " %d" % (sum(len(chunk) for chunk in LEAKED) >> 10)
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


application = app
