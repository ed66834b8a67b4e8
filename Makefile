# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create .venv if missing and install the CPU build of torch before the project, so
# pip never pulls the multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.x3dsearch-installed
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_CPU)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/x3dsearch expand --target-gflops 6 --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
