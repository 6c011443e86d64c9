"""Test app: a file sent the way frameworks send one, through wsgi.file_wrapper.

The file is $DOWNLOAD_FILE.

/flask     Flask's send_file (a block size of 8 KiB suggested; Range requests)
/django    Django's FileResponse (4 KiB suggested)
/pipe      the file copied through a pipe by a thread (not a regular file: its
           blocks are the suggested 4 KiB)
/accel/<name>
           X-Accel-Redirect: /protected/<name> for a name in $DOWNLOAD_FILE's
           directory (nginx sends the file; docs/frontends/nginx.md), 404 for
           any other name
"""

import os
import threading
from urllib.parse import quote

import django
from django.conf import settings
from flask import Flask, abort, send_file

PATH = os.environ["DOWNLOAD_FILE"]

flask_app = Flask(__name__)


@flask_app.get("/flask")
def flask_download():
    return send_file(PATH, mimetype="application/octet-stream", conditional=True)


@flask_app.get("/accel/<name>")
def accel_download(name):
    # Only names the app checked go to nginx: here, files of one directory.
    if name not in os.listdir(os.path.dirname(PATH)):
        abort(404)
    return "", 200, {"X-Accel-Redirect": "/protected/" + quote(name),
                     "Content-Type": "application/octet-stream",
                     "Content-Disposition": "attachment; filename=%s" % quote(name)}


settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="test",
                   MIDDLEWARE=[], INSTALLED_APPS=[])
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings.configure)
from django.http import FileResponse  # noqa: E402
from django.urls import path  # noqa: E402


def django_download(request):
    return FileResponse(open(PATH, "rb"), content_type="application/octet-stream")


urlpatterns = [path("django", django_download)]
django_app = get_wsgi_application()


def _copy_to(write_end: int) -> None:
    with open(PATH, "rb") as source, os.fdopen(write_end, "wb") as sink:
        for block in iter(lambda: source.read(65536), b""):
            sink.write(block)


def pipe_download(environ, start_response):
    read_end, write_end = os.pipe()
    threading.Thread(target=_copy_to, args=(write_end,), daemon=True).start()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.path.getsize(PATH)))])
    return environ["wsgi.file_wrapper"](os.fdopen(read_end, "rb"), 4096)


def app(environ, start_response):
    route = environ.get("PATH_INFO", "")
    if route == "/pipe":
        return pipe_download(environ, start_response)
    if route == "/django":
        return django_app(environ, start_response)
    return flask_app(environ, start_response)
