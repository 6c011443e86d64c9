"""The optional compiled core.

`WSGI_FCGI_COMPILE=1 pip install .` (or `make wheel`) compiles the sans-IO
core, `wsgi_fcgi/protocol.py`, `connection.py` and `environ.py` (the
modules of wsgi_fcgi.CORE_MODULES), with mypyc into C extension modules
that Python imports in place of those files; every other module stays
Python.  The .py files are the reference: without the variable the package
is pure Python, and `make test` runs the suite on both builds.  The build
backend (scripts/build_backend.py) adds mypy to the build requirements when
the variable is set.  All other metadata is in pyproject.toml.
"""

import os

from setuptools import setup

#: the files of wsgi_fcgi.CORE_MODULES (not imported here: the build needs no import of the package)
COMPILED_MODULES = ["wsgi_fcgi/protocol.py", "wsgi_fcgi/connection.py", "wsgi_fcgi/environ.py"]


def compile_requested() -> bool:
    return os.environ.get("WSGI_FCGI_COMPILE", "").lower() in ("1", "yes", "true")


def ext_modules() -> list:
    if not compile_requested():
        return []
    from mypyc.build import mypycify
    # group_name: the runtime shared by the modules is wsgi_fcgi__mypyc.*.so, not a hash
    return mypycify(COMPILED_MODULES, opt_level="3", group_name="wsgi_fcgi")


if __name__ == "__main__":
    setup(ext_modules=ext_modules())
