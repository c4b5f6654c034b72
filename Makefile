# GPT from the Ground Up: build, test and teach with the book.
#
#   make serve     build the website (if needed) and serve it on http://127.0.0.1:$(PORT)/
#   make test      everything CI checks: lint, library tests, notebooks, site build, browser test
#
# Every target installs what it needs first (`make setup`), so each works on a fresh clone.
# `make help` lists all targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
JB := $(VENV)/bin/jupyter-book
JUPYTER := $(VENV)/bin/jupyter
PYTEST := $(VENV)/bin/pytest
PORT ?= 8000
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Stamps: setup reruns only when its inputs change (or the folder it fills is deleted).
VENV_STAMP := $(VENV)/.setup-done
NPM_STAMP := node_modules/.npm-ci-done
SITE_STAMP := _build/html/.built

NOTEBOOKS := $(shell find chapters -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' 2>/dev/null | sort)
# `make execute NB=chapters/05-practice/01-environment.ipynb` re-runs just one notebook.
NB ?= $(NOTEBOOKS)
BOOK_SOURCES := _config.yml _toc.yml references.bib $(wildcard *.md) \
	$(shell find chapters figures assets _ext -type f -not -path '*/.ipynb_checkpoints/*' \
	        -not -name '*.pyc' 2>/dev/null)
BUILD_FLAGS := -W -n --keep-going
# Notebooks run with one intra-op thread wherever they run under make (execute and nbval alike):
# float sums then add up in the same order on every machine, so stored outputs reproduce exactly.
NB_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 GPTLIB_STATIC_EXPLORERS=1
NBVAL_FLAGS := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	--nbval-cell-timeout=300 -p no:cacheprovider

.PHONY: help setup book serve execute test lint test-lib test-classroom test-notebooks nbval \
	test-site chromium student classroom figures pretrain bench duplicates clean distclean

help:
	@echo "make serve     build the site if needed and serve it on http://127.0.0.1:$(PORT)/"
	@echo "make test      lint, library tests, notebook checks, strict nbval, site build, browser test"
	@echo "make setup     create .venv, install pinned packages, gptlib, site assets, corpus"
	@echo "make book      build the site from the stored notebook outputs into _build/html"
	@echo "make execute   re-execute every chapter notebook in place (NB=path for one)"
	@echo "make student   student notebooks in student/: exercise stubs, no solutions"
	@echo "make classroom an nbgrader course in classroom/: autograded assignments, released"
	@echo "make figures   regenerate figures/ from the scripts in figures/"
	@echo "make pretrain  train the book's model into checkpoints/book-model"
	@echo "make bench     run the speed benchmarks in benchmarks/"
	@echo "make duplicates  scan gptlib, tests, experiments and the notebooks' code for repeats"
	@echo "make clean     remove _build/, student/, classroom/ (distclean: also .venv/, node_modules/)"

# ---------------------------------------------------------------------------------------------
# Setup

setup: $(VENV_STAMP) $(NPM_STAMP)

$(VENV_STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PIP) install --disable-pip-version-check -q -r requirements.txt
	$(PIP) install --disable-pip-version-check -q --no-deps -e .
	@# Download and verify the Shakespeare corpus once (kept in $$GPTLIB_CACHE or ~/.cache/gptlib).
	$(PY) -m gptlib data
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# ---------------------------------------------------------------------------------------------
# The website

book: setup
	$(JB) build . $(BUILD_FLAGS) --all
	touch $(SITE_STAMP)

$(SITE_STAMP): $(BOOK_SOURCES) $(VENV_STAMP) $(NPM_STAMP)
	$(MAKE) --no-print-directory book

serve: $(SITE_STAMP)
	@echo "Serving the book at http://127.0.0.1:$(PORT)/  (Ctrl-C to stop)"
	$(PY) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

# ---------------------------------------------------------------------------------------------
# Notebooks

execute: setup
	@for nb in $(NB); do \
	  echo "executing $$nb"; \
	  $(NB_ENV) $(JUPYTER) nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 "$$nb"; \
	done

# student/<chapter>/<page>.ipynb (tools/student.py): each coding exercise's solution becomes a
# stub (signature, docstring, `raise NotImplementedError`) that its checker reports as "not
# implemented yet"; other solution cells go; MyST markup becomes plain Markdown; outputs cleared.
# Same folder depth as chapters/, so relative paths in the notebooks still resolve.
student: setup
	rm -rf student
	$(PY) tools/student.py --out student

# classroom/ (tools/classroom.py): an nbgrader course, one assignment per exercise chapter, its
# autograded cells the gptlib.exercises checkers; source/ holds the solutions, release/ (made by
# `nbgrader generate_assignment`) what students get. Grading is in the instructor's guide (9.5).
classroom: setup
	$(PY) tools/classroom.py --out classroom --release

figures: setup
	@shopt -s nullglob; for f in figures/*.py; do echo "running $$f"; $(PY) "$$f"; done

# Trains from scratch (move the committed checkpoints/book-model away first); the console output,
# with the wall time at its end, goes to checkpoints/book-model/train-output.txt. The wall time
# covers training only, not the evaluation that follows.
pretrain: setup
	mkdir -p checkpoints/book-model
	start=$$(date +%s); \
	$(PY) -m gptlib train --config checkpoints/book-model.json --out checkpoints/book-model \
	  --no-progress 2>&1 | tee checkpoints/book-model/train-output.txt; \
	echo "wall time of make pretrain: $$(( $$(date +%s) - start )) s" \
	  | tee -a checkpoints/book-model/train-output.txt
	@# score it on the whole validation text (experiments/results/book-model.json, read by 5.4)
	$(PY) experiments/evaluate.py

bench: setup
	@shopt -s nullglob; for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) "$$f"; done

# The duplicate-code scan over the library, tests, experiments and the notebooks' code cells
# (exported to .py first: the scan does not read .ipynb), in a temporary copy outside the repo.
# Needs the `duplicates` command; tests/test_notebook_code.py is the check that runs everywhere.
duplicates: setup
	@command -v duplicates >/dev/null || { echo "the duplicates command is not installed"; exit 1; }
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PY) tools/notebook_code.py "$$tmp" >/dev/null; \
	tar -cf - --exclude=__pycache__ gptlib tests experiments | tar -xf - -C "$$tmp"; \
	duplicates --repo "$$tmp" --most 40

# ---------------------------------------------------------------------------------------------
# Tests, in the order CI runs them

test: setup chromium
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-lib
	$(MAKE) --no-print-directory test-classroom
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory nbval
	$(MAKE) --no-print-directory book
	$(MAKE) --no-print-directory test-site

lint: setup
	$(VENV)/bin/ruff check gptlib tests benchmarks experiments tools _ext
	$(VENV)/bin/ruff format --check gptlib tests benchmarks experiments tools _ext
	@# Markdown that reads well in JupyterLab too: no site-only TeX macros, and references to
	@# other pages carry their title (tools/expand_tex_macros.py, tools/explicit_ref_titles.py).
	$(PY) tools/expand_tex_macros.py --check
	$(PY) tools/explicit_ref_titles.py --check

# Library tests: everything in tests/ except the classroom, notebook, TOC and site checks, and
# every docstring example in gptlib/ (--doctest-modules, set in pyproject.toml).
test-lib: setup
	$(PYTEST) tests gptlib -m "not book" -p no:cacheprovider \
	  --ignore=tests/test_notebooks.py --ignore=tests/test_toc.py --ignore=tests/test_site.py \
	  --ignore=tests/test_student.py --ignore=tests/test_classroom.py

# The student notebooks (every page rewritten; the exercise pages executed as released and with
# the book's solutions pasted back) and the nbgrader course graded end to end on a temporary
# course with its own gradebook: full marks, zero, and one wrong answer. A few minutes.
test-classroom: setup
	$(NB_ENV) $(PYTEST) tests/test_student.py tests/test_classroom.py tools/student.py \
	  tools/classroom.py -q -p no:cacheprovider

test-notebooks: setup
	$(PYTEST) tests/test_notebooks.py tests/test_toc.py -q -p no:cacheprovider

nbval: setup
	$(NB_ENV) $(PYTEST) $(NBVAL_FLAGS) $(NOTEBOOKS)

# Consumes the site that `make book` just built (BOOK_BUILT=1 skips a second build).
test-site: setup chromium
	BOOK_BUILT=1 BOOK_CHROMIUM=$(CHROMIUM) $(PYTEST) -m book tests/test_site.py tests/test_jupyterlab.py -p no:cacheprovider

chromium:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# ---------------------------------------------------------------------------------------------

clean:
	rm -rf _build student classroom .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) node_modules
