# bnsweep entry points. Every target installs what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The command line (orchestrator/cli.py, installed by `pip install -e .`): bnsweep train|sweep|figures|bench|claims.
BNSWEEP := $(VENV)/bin/bnsweep
STAMP := $(VENV)/.installed
# torch is pinned: this exact version is a CPU build here; an unpinned torch pulls CUDA wheels.
TORCH_VERSION := 2.13.0
MUJOCO_VERSION := 3.17.0
# Every version `make install` resolves (`make constraints` writes it from .venv); without the file, the newest.
CONSTRAINTS := constraints.txt
PIP_CONSTRAINTS = $(if $(wildcard $(CONSTRAINTS)),-c $(CONSTRAINTS))
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

.PHONY: help install system-deps constraints test test-faults lint sweep figures bench verify-learning clean

help: ## list the targets
	@echo "bnsweep: batch-normalization mode study of DrQ-v2 (see README.md)"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-16s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: GRID=$(GRID) PROFILE=$(PROFILE) (local|paper) DRY_RUN=1 PACK=K RESULTS=$(RESULTS) FIGURES=$(FIGURES) ARGS=..."

install: system-deps $(STAMP) ## create .venv with pinned torch (CPU) and mujoco, every version from constraints.txt; idempotent

system-deps: ## Debian Mesa EGL/OSMesa packages for headless rendering (skipped when present)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then :; else \
		echo "installing headless GL packages: $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(STAMP): setup.cfg pyproject.toml $(wildcard $(CONSTRAINTS))
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(PIP_CONSTRAINTS)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" "mujoco==$(MUJOCO_VERSION)" $(PIP_CONSTRAINTS)
	$(PY) -m pip install -q -e ".[dev]" $(PIP_CONSTRAINTS) $(if $(PIP_CONSTRAINTS),--build-constraint $(CONSTRAINTS))
	@touch $(STAMP)

# pip freeze of .venv: --all adds pip and setuptools (the pip `make install` upgrades to, the build backend),
# --exclude-editable drops bnsweep itself; torch loses its local label (2.13.0+cpu: a build of this machine's
# wheel source, not on PyPI) so the pin reads as the Makefile's. A line naming a path or URL (`name @ ...`) is
# left out and reported: a clean clone could not install it. Unchanged pins leave the file (and .venv) alone.
constraints: ## refresh constraints.txt: pin every package .venv holds (pip freeze); make install installs with it
	@[ -x $(PY) ] || { echo "error: no $(PY): run make install first" >&2; exit 2; }
	@set -eo pipefail; $(PY) -m pip freeze --all --exclude-editable > $(CONSTRAINTS).freeze; \
	if grep -v -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' $(CONSTRAINTS).freeze; then \
		echo "  ^ left out of $(CONSTRAINTS): not a name==version from an index" >&2; fi; \
	grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' $(CONSTRAINTS).freeze | sed -E 's/^(torch==[^+]+)\+.*/\1/' \
		> $(CONSTRAINTS).pins; rm -f $(CONSTRAINTS).freeze; \
	for pin in torch==$(TORCH_VERSION) mujoco==$(MUJOCO_VERSION); do \
		grep -qix "$$pin" $(CONSTRAINTS).pins || { rm -f $(CONSTRAINTS).pins; \
			echo "error: .venv does not hold $$pin (the Makefile's pin): make install first" >&2; exit 1; }; done; \
	if [ -f $(CONSTRAINTS) ] && grep -v '^#' $(CONSTRAINTS) | cmp -s - $(CONSTRAINTS).pins; then \
		rm -f $(CONSTRAINTS).pins; echo "$(CONSTRAINTS): unchanged ($$(grep -vc '^#' $(CONSTRAINTS)) pins)"; exit 0; fi; \
	{ echo "# Every version \`make install\` resolves, pinned (pip install -c $(CONSTRAINTS)). Made by \`make constraints\`"; \
	  echo "# on $$(date -u +%Y-%m-%d) from .venv (Python $$($(PY) -c 'import platform; print(platform.python_version())')): pip freeze --all --exclude-editable,"; \
	  echo "# torch's local label dropped. To move to newer versions: rm -r .venv $(CONSTRAINTS); make install constraints"; \
	  cat $(CONSTRAINTS).pins; } > $(CONSTRAINTS); rm -f $(CONSTRAINTS).pins; \
	echo "$(CONSTRAINTS): $$(grep -vc '^#' $(CONSTRAINTS)) pins written"

# Two pytest-xdist workers: most tests are one single-threaded process, so a 2-core machine runs two at once.
# Each module (its whole directory where a session fixture is shared) stays on one worker (tests/conftest.py).
TEST_WORKERS ?= 2
test: install ## run the test suite (what CI runs; the slow fault-injection tests are in test-faults)
	$(PY) -m pytest -q -m "not faults_slow" -n $(TEST_WORKERS)

test-faults: install ## the slow fault-injection tests (killed driver, full disk, SIGTERM/double Ctrl-C to a pack; ~6 min, root with mount rights)
	$(PY) -m pytest -q -m faults_slow

# All three gates run, so one pass shows every finding; the target fails if any of them fails.
lint: install ## quality gates (CI runs them after the tests): ruff check, ruff format --check, mypy, import rules (config: pyproject.toml)
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check ."; $(VENV)/bin/ruff format --check . || status=1; \
	echo "mypy (agent contract envs orchestrator analysis bench)"; $(VENV)/bin/mypy || status=1; \
	echo "lint-imports (the architecture's import rules)"; $(VENV)/bin/lint-imports --no-cache || status=1; \
	exit $$status

sweep: install ## run GRID (sweeps/<GRID>.yaml or a path) on PROFILE, then draw its figures
	$(BNSWEEP) sweep --grid $(GRID) --profile $(PROFILE) --results $(RESULTS) --figures $(FIGURES) $(if $(DRY_RUN),--dry-run) $(if $(PACK),--pack $(PACK)) $(ARGS)

figures: install ## redraw every figure and figures/report.md from the result store
	$(BNSWEEP) figures --results $(RESULTS) --out $(FIGURES) $(ARGS)

# bench.report then rewrites docs/performance.md's measured tables from the bench JSON files (latest.json among them).
bench: install ## benchmark suite -> bench/latest.json and docs/performance.md's tables (ARGS=--quick: smoke version; ARGS="--device cuda": GPU learners)
	$(BNSWEEP) bench $(ARGS)
	$(PY) -m bench.report

verify-learning: install ## learning check: cartpole_swingup states, 100k frames, 3 seeds x Origin/MA-BN/TTTTT (~40 min)
	$(BNSWEEP) sweep --grid verify_learning --profile $(PROFILE) --results $(RESULTS) --figures $(FIGURES) $(ARGS)

# The grids whose findings the claims table tests (analysis/claims.py CLAIMS), run one after another.
CLAIM_GRIDS := critic_i_mode buffer_mixing learning_rate optimizer exploration normalization

.PHONY: verify-claims
verify-claims: install ## run the claim grids on PROFILE (local: ~3h30m est. on 2 cores, resumable), then the claims table (figures/report.md)
	@set -e; for grid in $(CLAIM_GRIDS); do \
		echo "== $$grid ($(PROFILE))"; \
		$(BNSWEEP) sweep --grid $$grid --profile $(PROFILE) --results $(RESULTS) --no-figures \
			$(if $(DRY_RUN),--dry-run) $(if $(PACK),--pack $(PACK)) $(ARGS); \
	done
	$(if $(DRY_RUN),@true,$(BNSWEEP) figures --results $(RESULTS) --out $(FIGURES) $(foreach g,$(CLAIM_GRIDS),--grid $(g)))
	$(if $(DRY_RUN),@true,$(BNSWEEP) claims --results $(RESULTS))

clean: ## remove caches (never results/)
	rm -rf .pytest_cache .ruff_cache .mypy_cache **/__pycache__
