#!/usr/bin/python3
# An app for Apache's mod_fcgid (shared hosting): Apache starts this script
# with the listening socket on fd 0 and sends each process one request at a
# time; serve() with no bind serves that socket.  Make it executable
# (chmod 755) and point the first line at a Python the web server's user can
# read and run (a venv's bin/python3, or the system's /usr/bin/python3 with
# wsgi-fcgi installed by `pip install --user`, see docs/frontends/mod_fcgid.md).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the app's modules next to this script

from myapp import app  # noqa: E402  (your WSGI app)
from wsgi_fcgi import serve  # noqa: E402

# mod_fcgid sends one request per process at a time: a few threads suffice.
serve(app, threads=2)
