"""A file download as Django's FileResponse sends one: a 4 MiB file opened
for each request and returned through wsgi.file_wrapper with the 4 KiB
block size Django suggests (Flask's send_file suggests 8 KiB), with its
Content-Length.  How the server moves a file: read block by block, framed
and written, or with larger reads or sendfile() where it may (PEP 3333
lets it ignore the suggestion).

The file is written once per process, under the temp directory, and
removed at exit.
"""
import atexit
import os
import tempfile

SIZE = 4 * 1024 * 1024
BLOCK_SIZE = 4096  # django.http.FileResponse.block_size

_fd, PATH = tempfile.mkstemp(prefix="wsgi-fcgi-bench-download-", suffix=".bin")
with os.fdopen(_fd, "wb") as _file:
    _file.write(b"d" * SIZE)
atexit.register(os.unlink, PATH)
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]


def app(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return environ["wsgi.file_wrapper"](open(PATH, "rb"), BLOCK_SIZE)


application = app
