"""wsgi_fcgi: serve WSGI applications over FastCGI behind nginx, lighttpd,
Apache, HAProxy, Caddy or H2O.

    from wsgi_fcgi import serve
    serve(app, bind="127.0.0.1:9000", threads=8)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Server", "serve", "__version__", "core_is_compiled"]

if TYPE_CHECKING:
    from .server import Server, serve


#: the modules a compiled build (setup.py) compiles: the sans-IO core
CORE_MODULES = ("protocol", "connection", "environ")


def core_is_compiled() -> bool:
    """Whether the core runs as the C extension modules of a compiled build
    (setup.py) or as Python."""
    import importlib
    files = [importlib.import_module("wsgi_fcgi." + name).__file__ or "" for name in CORE_MODULES]
    return not any(path.endswith(".py") for path in files)


def build_description() -> str:
    """"0.1.0 (compiled core)": the version and the build, for --version and the startup line."""
    return "%s (%s)" % (__version__, "compiled core" if core_is_compiled() else "pure Python")


def __getattr__(name: str) -> Any:
    # The engine is imported on first use, so that `python -m wsgi_fcgi.settings`
    # or the client do not load it (and no module is imported twice).
    if name in ("Server", "serve"):
        from . import server
        return getattr(server, name)
    raise AttributeError("module 'wsgi_fcgi' has no attribute %r" % name)
