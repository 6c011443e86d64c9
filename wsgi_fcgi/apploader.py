"""Find the WSGI callable named on the command line, as gunicorn reads it."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable


class AppImportError(Exception):
    """The app named on the command line cannot be loaded: one clear line."""


def load_app(spec: str) -> Callable:
    """`pkg.mod:app`, `pkg.mod` (`application`, then `app`), `pkg.mod:create_app()`
    or `pkg.mod:create_app('arg', key=1)` (a factory called with literal arguments).

    Every failure, also an exception raised by the app's own module while it
    is imported, is an AppImportError naming the file and line."""
    try:
        return _load(spec)
    except AppImportError:
        raise
    except Exception as exc:
        raise AppImportError("cannot load app %r: %s: %s%s" % (spec, type(exc).__name__, exc, _where(exc))) from exc


def _where(exc: BaseException) -> str:
    """' (file, line N)' of the innermost frame of the traceback, if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        return " (%s, line %s)" % (exc.filename, exc.lineno)
    if not frames:
        return ""
    return " (%s, line %d)" % (frames[-1].filename, frames[-1].lineno)


def enter_directory(path: str) -> None:
    """--chdir PATH: change to it and import from it, by the path as given.

    With `current -> releases/N` (a symlinked release), os.getcwd() is the
    resolved releases/N; sys.path keeps `current`, so a worker started after
    the link moved (HUP) imports the new release."""
    os.chdir(path)
    path = os.path.abspath(path)  # no symlink is resolved
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    importlib.invalidate_caches()


def _cwd_on_path() -> bool:
    if "" in sys.path:
        return True
    for entry in sys.path:
        try:
            if os.path.samefile(entry, "."):
                return True
        except OSError:
            continue
    return False


def _load(spec: str) -> Callable:
    module_name, _, expression = spec.partition(":")
    if not module_name:
        raise AppImportError("%r: write the app as MODULE:NAME" % spec)
    if module_name.endswith(".py") or "/" in module_name:
        raise AppImportError("%r is a file name: write MODULE:APP, e.g. %s:%s"
                             % (spec, os.path.basename(module_name).removesuffix(".py") or "app",
                                expression or "app"))
    if not _cwd_on_path():
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) and module_name.startswith(exc.name):
            raise AppImportError("cannot import module %r: %s" % (module_name, exc)) from exc
        raise
    if not expression:
        for name in ("application", "app"):
            if hasattr(module, name):
                return _check(getattr(module, name), spec)
        raise AppImportError("module %r has no 'application' or 'app'" % module_name)
    return _check(_evaluate(module, expression.strip(), spec), spec)


def _evaluate(module, expression: str, spec: str):
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise AppImportError("%r: cannot parse %r as a name or a call" % (spec, expression)) from None
    if isinstance(node, ast.Name):
        return _attribute(module, node.id, spec)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        factory = _attribute(module, node.func.id, spec)
        try:
            args = [ast.literal_eval(arg) for arg in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise AppImportError("%r: factory arguments must be literals" % spec) from None
        return factory(*args, **kwargs)
    raise AppImportError("%r: expected a name or a factory call after ':'" % spec)


def _attribute(module, name: str, spec: str):
    try:
        return getattr(module, name)
    except AttributeError:
        raise AppImportError("%r: module %r has no attribute %r"
                             % (spec, module.__name__, name)) from None


def _check(app, spec: str) -> Callable:
    if not callable(app):
        raise AppImportError("%r is not callable (got %s)" % (spec, type(app).__name__))
    if _is_factory(app):
        raise AppImportError("%r takes no arguments: it looks like an app factory, not a WSGI app; "
                             "write %s() to call it" % (spec, spec if ":" in spec else spec + ":" + app.__name__))
    return app


def _is_factory(app) -> bool:
    """A function that can be called with no arguments but not with
    (environ, start_response): a factory named without its `()`."""
    if not inspect.isfunction(app) and not inspect.ismethod(app):
        return False
    try:
        signature = inspect.signature(app)
        signature.bind()
    except (TypeError, ValueError):
        return False
    try:
        signature.bind({}, None)
    except TypeError:
        return True
    return False
