"""setuptools' build backend, plus mypy when WSGI_FCGI_COMPILE asks setup.py
for the compiled core: the one build requirement that depends on how the
wheel is built (PEP 517 `get_requires_for_build_wheel`)."""

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (every hook not redefined here)

from setup import compile_requested

#: the mypy that requirements-dev.txt asks for, whose mypyc compiles the core
MYPY = "mypy>=1.10"


def get_requires_for_build_wheel(config_settings=None):
    extra = [MYPY] if compile_requested() else []
    return build_meta.get_requires_for_build_wheel(config_settings) + extra


def get_requires_for_build_editable(config_settings=None):
    extra = [MYPY] if compile_requested() else []
    return build_meta.get_requires_for_build_editable(config_settings) + extra
