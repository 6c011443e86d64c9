"""MODULE:APP as gunicorn reads it."""

import itertools
import sys

import pytest

from wsgi_fcgi.apploader import AppImportError, load_app

_names = itertools.count()

SOURCE = '''
def application(environ, start_response):
    return [b"application"]

def app(environ, start_response):
    return [b"app"]

def create_app(name="default", **options):
    def made(environ, start_response):
        return [("%s %r" % (name, sorted(options.items()))).encode()]
    return made

not_callable = 42
'''


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A fresh importable module with SOURCE (or given text); returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created = []

    def make(text=SOURCE):
        name = "loader_mod_%d" % next(_names)
        (tmp_path / (name + ".py")).write_text(text)
        created.append(name)
        return name
    yield make
    for name in created:
        sys.modules.pop(name, None)


def body(app):
    return b"".join(app({}, None))


def test_module_colon_name(module):
    assert body(load_app(module() + ":app")) == b"app"


def test_module_alone_prefers_application_then_app(module):
    assert body(load_app(module())) == b"application"
    assert body(load_app(module("def app(e, s):\n    return [b'only app']\n"))) == b"only app"


def test_factory_call(module):
    assert body(load_app(module() + ":create_app()")) == b"default []"


def test_factory_with_literal_arguments(module):
    app = load_app(module() + ":create_app('prod', debug=False, n=3)")
    assert body(app) == b"prod [('debug', False), ('n', 3)]"


@pytest.mark.parametrize("suffix, message", [
    (":missing", "no attribute 'missing'"),
    (":not_callable", "not callable"),
    (":create_app(open('x'))", "literals"),
    (":a.b(", "cannot parse"),
    (":app[0]", "name or a factory call"),
])
def test_bad_app_names(module, suffix, message):
    with pytest.raises(AppImportError, match=message):
        load_app(module() + suffix)


def test_module_without_app(module):
    with pytest.raises(AppImportError, match="no 'application' or 'app'"):
        load_app(module("x = 1\n"))


def test_missing_module():
    with pytest.raises(AppImportError, match="cannot import module"):
        load_app("no_such_module_here_at_all:app")


def test_empty_module_name():
    with pytest.raises(AppImportError):
        load_app(":app")


def test_import_error_inside_the_module_is_not_disguised(module):
    # The module exists but imports something missing: the real error shows.
    with pytest.raises(AppImportError) as info:
        load_app(module("import no_such_dependency_xyz\n"))
    assert "No module named 'no_such_dependency_xyz'" in str(info.value)
    assert ".py, line 1)" in str(info.value)  # where the failing import is


def test_a_factory_named_without_its_call_gets_a_hint(module):
    name = module()
    with pytest.raises(AppImportError, match=r"write %s:create_app\(\) to call it" % name):
        load_app(name + ":create_app")


FACTORY_LOOKALIKES = '''
def two_args(environ, start_response):
    return []

def defaults(environ=None, start_response=None):
    return []

def varargs(*args):
    return []

class App:
    def __call__(self, environ, start_response):
        return []

instance = App()
'''


@pytest.mark.parametrize("name", ["two_args", "defaults", "varargs", "instance", "App"])
def test_wsgi_callables_are_not_taken_for_factories(module, name):
    assert callable(load_app(module(FACTORY_LOOKALIKES) + ":" + name))


@pytest.mark.parametrize("spec, hint", [("app.py", "app:app"), ("app.py:application", "app:application"),
                                        ("src/site/app.py", "app:app")])
def test_a_file_name_gets_a_module_hint(spec, hint):
    with pytest.raises(AppImportError, match="is a file name: write MODULE:APP, e.g. " + hint):
        load_app(spec)
