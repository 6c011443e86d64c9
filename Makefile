# make demo: serve examples/flask_app behind nginx on http://127.0.0.1:8080/
# make test: install what is missing and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-compiled wheel lint unit deps venv bench bench-micro docs clean

$(VENV)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e . -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

deps:
	bash scripts/install-system-deps.sh

demo: venv
	bash scripts/install-system-deps.sh --demo
	$(PY) scripts/demo.py

test: deps venv lint
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)
	$(MAKE) test-compiled

# make wheel: the wheel with the compiled core (setup.py) for this machine's Python, in dist/
wheel: venv
	rm -rf build/mypyc-wheel
	WSGI_FCGI_COMPILE=1 $(PY) -m pip wheel -q --no-deps --no-build-isolation -w build/mypyc-wheel .
	mkdir -p dist && cp build/mypyc-wheel/*.whl dist/

# The tests that drive the protocol core, again on the compiled core: the
# wheel `make wheel` builds, unpacked (tests/hardening/test_compiled_core.py
# also compares it with the .py files).  The soak test runs once, on the pure build.
COMPILED_TESTS = tests/unit $(filter-out tests/hardening/test_soak.py,$(wildcard tests/hardening/test_*.py)) \
	$(addprefix tests/integration/test_,raw_protocol.py nginx.py garbage.py differential.py roles.py \
	zero_loss.py cgi_fcgi.py inline_requests.py refused_requests.py)
test-compiled: wheel
	rm -rf build/compiled
	$(PY) -m zipfile -e build/mypyc-wheel/*.whl build/compiled
	WSGI_FCGI_TEST_TREE=build/compiled $(PY) -m pytest -n 2 $(PYTEST_ARGS) $(COMPILED_TESTS)

lint: venv
	$(VENV)/bin/ruff check setup.py wsgi_fcgi tests benchmarks scripts examples
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# make bench: nginx, wrk, libfcgi-dev from Debian, the contenders into a venv (BENCH_VENV, default /tmp/wsgi-fcgi-bench-venv), then every scenario;
# results under benchmarks/results/<timestamp>/ (BENCH_ARGS="--duration 3 --repeat 1 --scenarios hello" for a quick look)
BENCH_ARGS ?=
bench: venv
	bash benchmarks/harness/setup.sh
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# make docs: regenerate docs/configuration.md's reference from wsgi_fcgi/settings.py (a test compares them)
docs: venv
	$(PY) tests/unit/test_docs.py

bench-micro: venv
	$(PY) -m pytest benchmarks/micro --benchmark-enable

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
