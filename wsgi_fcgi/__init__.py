"""wsgi_fcgi: serve WSGI applications over FastCGI behind nginx, lighttpd,
Apache, HAProxy or Caddy.

    from wsgi_fcgi import serve
    serve(app, bind="127.0.0.1:9000", threads=8)
"""

__version__ = "0.1.0"

from .server import Server, serve  # noqa: E402

__all__ = ["Server", "serve", "__version__"]
