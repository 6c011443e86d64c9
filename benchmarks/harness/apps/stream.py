"""A response streamed in many small chunks, as a CSV export, a log tail or
server-sent events are: GET / yields 2000 lines of about 30 bytes from a
generator, each its own chunk (PEP 3333: each goes out as the app yields
it), with no Content-Length.  How the server moves many small writes.
"""

LINES = 2000


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (b"line %d of %d, a streamed row\n" % (number, LINES) for number in range(1, LINES + 1))


application = app
