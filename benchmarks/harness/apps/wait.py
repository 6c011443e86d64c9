"""An app that waits: 5 ms without the GIL (as for a database query), then
13 bytes of text/plain.  With 8 threads a process can serve 1600 req/s; a
server that runs such requests one at a time serves 200."""

import time

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
WAIT_S = 0.005


def app(environ, start_response):
    time.sleep(WAIT_S)
    start_response("200 OK", list(HEADERS))
    return [BODY]


application = app
