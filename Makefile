# make demo: serve examples/flask_app behind nginx on http://127.0.0.1:8080/
# make test: install what is missing and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test lint unit deps venv bench bench-micro docs clean

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

lint: venv
	$(VENV)/bin/ruff check wsgi_fcgi tests benchmarks scripts examples
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
	rm -rf $(VENV) build *.egg-info .pytest_cache
