"""setuptools' build backend, plus mypy when WSGI_FCGI_COMPILE asks setup.py
for the compiled core: the one build requirement that depends on how the
wheel is built (PEP 517 `get_requires_for_build_wheel`)."""

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (every hook not redefined here)

from setup import compile_requested

#: the mypy that requirements-dev.txt asks for, whose mypyc compiles the core
MYPY = "mypy>=1.10"


def _requires(setuptools_hook, config_settings):
    # Compiling, setuptools' own hook must not run: it executes setup.py, whose
    # ext_modules imports mypyc, which is what this hook asks to install.
    # setup.py has no setup_requires; setuptools is in build-system.requires.
    return [MYPY] if compile_requested() else setuptools_hook(config_settings)


def get_requires_for_build_wheel(config_settings=None):
    return _requires(build_meta.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(config_settings=None):
    return _requires(build_meta.get_requires_for_build_editable, config_settings)
