"""The WSGI environ from a request's FCGI_PARAMS (PEP 3333, CGI RFC 3875), sans-IO.

The rules, and what each web server sends, are in docs/environ.md.  The
entries that are the same for every request (wsgi.version, wsgi.input's
flags, ...) come from `wsgi.base_environ()`, the per-request streams from the
server.  Compiled with the protocol core in a compiled build (setup.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes


def params_to_environ(params: list[tuple[str, str]]) -> dict[str, str]:
    """FCGI_PARAMS pairs (native strings: protocol.decode_params) as a dict.

    A name sent twice (configs set a param again after `include
    fastcgi_params`): a CGI variable keeps its last value, as php-fpm, flup
    and Go's net/http/fcgi do; an HTTP header (nginx sends one param per
    header line) is joined, HTTP_COOKIE with "; " (RFC 6265 5.4), others with
    ", " (RFC 9110 5.3), except HTTP_HOST: a Host cannot repeat, the last
    wins (configs override Debian's `$host` with `$http_host` to keep the
    port).  Linear in the number of pairs.
    """
    environ = dict(params)
    if len(environ) < len(params):  # a name came more than once (rare): the last value stands but for headers
        _join_repeated_headers(environ, params)
    environ.pop("HTTP_CONTENT_LENGTH", None)
    environ.pop("HTTP_CONTENT_TYPE", None)
    return environ


def _join_repeated_headers(environ: dict[str, str], params: list[tuple[str, str]]) -> None:
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name.startswith("HTTP_") and name != "HTTP_HOST":
            values.setdefault(name, []).append(value)
    for name, header_values in values.items():
        if len(header_values) > 1:
            environ[name] = ("; " if name == "HTTP_COOKIE" else ", ").join(header_values)


def request_path(environ: dict[str, str]) -> str:
    """The request path, percent-decoded once, as a WSGI (latin-1) string.

    REQUEST_URI is the raw path the client sent; SCRIPT_NAME + PATH_INFO,
    which web servers send already decoded, is the fallback.
    """
    uri = environ.get("REQUEST_URI")
    if uri is None:
        return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = uri.partition("?")[0]
    if not path.startswith("/") and "://" in path:  # absolute-form (RFC 9112 3.2.2)
        path = "/" + path.partition("://")[2].partition("/")[2]
    if "%" in path:
        path = unquote_to_bytes(path).decode("latin-1")
    return path


def split_script_name(environ: dict[str, str], script_name: str) -> None:
    """Set SCRIPT_NAME and PATH_INFO (PEP 3333, CGI RFC 3875 4.1.13).

    With a PATH_INFO from the web server and no `script_name`, the server's
    split stands.  With `script_name`, the path is split there: the path the
    server routed (SCRIPT_NAME + PATH_INFO, decoded and normalised: H2O
    resolves "/app/x/%2e%2e/y" to "/app/y") when it sent a PATH_INFO under
    the mount point, else the request path (nginx's stock fastcgi_params
    send SCRIPT_NAME as the whole path and no PATH_INFO).
    """
    server_path = environ.get("PATH_INFO")
    if server_path and not script_name:
        name = environ.get("SCRIPT_NAME", "")
        if name.endswith("/"):
            environ["SCRIPT_NAME"] = name.rstrip("/")
            if not server_path.startswith("/"):
                environ["PATH_INFO"] = "/" + server_path
        return
    path = request_path(environ)
    if server_path:
        routed = environ.get("SCRIPT_NAME", "") + server_path
        if routed == script_name or routed.startswith(script_name + "/"):
            path = routed
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        environ["SCRIPT_NAME"] = script_name
        environ["PATH_INFO"] = path[len(script_name):]
    else:
        environ["SCRIPT_NAME"] = ""
        environ["PATH_INFO"] = path


def url_scheme(environ: dict[str, str]) -> str:
    if environ.get("HTTPS", "").lower() in ("on", "1") or environ.get("REQUEST_SCHEME") == "https":
        return "https"
    return "http"


def build_environ(params: list[tuple[str, str]], base: dict[str, Any], script_name: str = "") -> dict[str, Any]:
    cgi = params_to_environ(params)
    split_script_name(cgi, script_name)
    cgi.setdefault("REQUEST_METHOD", "GET")
    cgi.setdefault("QUERY_STRING", "")
    cgi.setdefault("SERVER_NAME", "localhost")
    cgi.setdefault("SERVER_PORT", "80")
    cgi.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
    # RFC 3875 4.1.17: SERVER_SOFTWARE names the web server; ours only if it sent none.
    cgi.setdefault("SERVER_SOFTWARE", "wsgi-fcgi")
    cgi["wsgi.url_scheme"] = url_scheme(cgi)
    environ: dict[str, Any] = cgi  # the same dict, from here on with the server's entries that are not strings
    environ.update(base)
    return environ
