# bnsweep entry points. Every target installs what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Headless MuJoCo rendering through Mesa's EGL (software GL on CPU machines).
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

GRID ?= critic_i_mode
PROFILE ?= local
DRY_RUN ?=
RESULTS ?= results
FIGURES ?= figures
ARGS ?=
PACK ?=

APT_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 libglfw3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install system-deps test test-faults lint sweep figures bench verify-learning clean

help: ## list the targets
	@echo "bnsweep: batch-normalization mode study of DrQ-v2 (see README.md)"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-16s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: GRID=$(GRID) PROFILE=$(PROFILE) (local|paper) DRY_RUN=1 PACK=K RESULTS=$(RESULTS) FIGURES=$(FIGURES) ARGS=..."

install: system-deps $(STAMP) ## create .venv with pinned torch (CPU) and mujoco; idempotent

system-deps: ## Debian Mesa EGL/OSMesa packages for headless rendering (skipped when present)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then :; else \
		echo "installing headless GL packages: $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(STAMP): setup.cfg pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned: this exact version is a CPU build here; an unpinned torch pulls CUDA wheels.
	$(PY) -m pip install -q "torch==2.13.0" "mujoco==3.17.0"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

test: install ## run the test suite (what CI runs; the slow fault-injection tests are in test-faults)
	$(PY) -m pytest -q -m "not faults_slow"

test-faults: install ## the slow fault-injection tests (killed driver, full disk; ~4 min, root with mount rights)
	$(PY) -m pytest -q -m faults_slow

lint: install ## ruff
	$(VENV)/bin/ruff check .

sweep: install ## run GRID (sweeps/<GRID>.yaml or a path) on PROFILE, then draw its figures
	$(PY) -m orchestrator.sweep --grid $(GRID) --profile $(PROFILE) --results $(RESULTS) --figures $(FIGURES) $(if $(DRY_RUN),--dry-run) $(if $(PACK),--pack $(PACK)) $(ARGS)

figures: install ## redraw every figure and figures/report.md from the result store
	$(PY) -m analysis.figures --results $(RESULTS) --out $(FIGURES) $(ARGS)

bench: install ## benchmark suite -> bench/latest.json (ARGS=--quick: smoke version; ARGS="--device cuda": GPU learners)
	$(PY) -m bench.run $(ARGS)

verify-learning: install ## learning check: cartpole_swingup states, 100k frames, 3 seeds x Origin/MA-BN/TTTTT (~40 min)
	$(PY) -m orchestrator.sweep --grid verify_learning --profile $(PROFILE) --results $(RESULTS) --figures $(FIGURES) $(ARGS)

# The grids whose findings the claims table tests (analysis/claims.py CLAIMS), run one after another.
CLAIM_GRIDS := critic_i_mode buffer_mixing learning_rate optimizer exploration normalization

.PHONY: verify-claims
verify-claims: install ## run the claim grids on PROFILE (local: ~1h23m est. on 2 cores), then the claims table (figures/report.md)
	@set -e; for grid in $(CLAIM_GRIDS); do \
		echo "== $$grid ($(PROFILE))"; \
		$(PY) -m orchestrator.sweep --grid $$grid --profile $(PROFILE) --results $(RESULTS) --no-figures \
			$(if $(DRY_RUN),--dry-run) $(if $(PACK),--pack $(PACK)) $(ARGS); \
	done
	$(if $(DRY_RUN),@true,$(PY) -m analysis.figures --results $(RESULTS) --out $(FIGURES) $(foreach g,$(CLAIM_GRIDS),--grid $(g)))
	$(if $(DRY_RUN),@true,$(PY) -m analysis.claims --results $(RESULTS))

clean: ## remove caches (never results/)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
