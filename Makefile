# Commands for a fresh machine: `make quick` (a 2-3 minute search, report and plot), `make demo`
# (the 6-GFLOP search), `make demo-fast` (the same with the fast pair of schedules) and `make test`
# (the suite). Each creates .venv if missing and installs the CPU
# build of torch before the project, so pip never pulls the multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
X3D := $(VENV)/bin/x3dsearch
STAMP := $(VENV)/.x3dsearch-installed
TORCH_CPU ?= torch==2.13.0

.PHONY: quick demo demo-fast test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_CPU)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# $(call search,RUN_DIR,OPTIONS): expand into RUN_DIR, resuming the run already there (a rerun after
# Ctrl-C continues it; after a finished run it replays the journal and retests the final model).
define search
	@if [ -f $(1)/run.yaml ]; then echo "make: $(1) holds a run: resuming it (delete $(1) to start afresh)"; \
	else echo "make: starting a new run in $(1)"; fi
	$(X3D) expand $(2) --output $(1) --resume
	$(X3D) report $(1)
	$(X3D) plot $(1) --output $(1)/frontier.png
endef

quick: $(STAMP)
	test -f runs/quick-data/augment.json || { rm -rf runs/quick-data && \
		$(X3D) make-data --output runs/quick-data --videos-per-class 8; }
	$(call search,runs/quick,--target-gflops 0.05 --data runs/quick-data)

demo: $(STAMP)
	$(call search,runs/demo,--target-gflops 6)

demo-fast: $(STAMP)
	$(call search,runs/demo-fast,--target-gflops 6 --proxy-schedule cpu_proxy_fast --full-schedule cpu_full --final-init inherit)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 tests  # the slowest tests named in every CI log

clean-venv:
	rm -rf $(VENV)
