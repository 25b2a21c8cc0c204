# Two commands do all the set-up: `make demo` (the main job) and `make test`.
# Each creates .venv and installs what is missing; with everything installed they start at once.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fastlearn-installed

.PHONY: demo test test-slow real-data bench notebook docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,offline]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fastlearn demo

# pytest exits 5 when it collected nothing: neither a pass nor an ordinary failure, so say so.
PYTEST = $(PY) -m pytest -q $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: nothing was checked (exit 5)" >&2; fi; \
	exit $$rc

# Lint (ruff) and type-check (mypy; its settings are in pyproject.toml) before the tests.
test: $(STAMP)
	$(VENV)/bin/ruff check fastlearn tests bench docs
	$(VENV)/bin/mypy
	@$(call PYTEST,)

# Real photos (../shared/data/dogscats) with real weights; CI runs these too. Without the
# photos the tests skip, except under CI (CI=true), where a skip would pass unseen: it fails.
DOGSCATS ?= ../shared/data/dogscats

test-slow: real-data $(STAMP)
	@$(call PYTEST,-m slow)

real-data:
	@if [ -n "$$CI" ] && [ "$$CI" != false ] && [ ! -d "$(DOGSCATS)/train" ]; then \
		echo "CI=$$CI: the real photos are missing ($(DOGSCATS)/train): the slow tests would skip; put them there or set DOGSCATS=" >&2; \
		exit 1; fi

# Jupyter with fastlearn in it: the `notebook` extra (server, widgets for the live progress bar)
# goes into the same .venv, then the lesson opens. Not part of the two set-up commands.
NB_STAMP := $(VENV)/.fastlearn-notebook

$(NB_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,offline,notebook]'
	touch $(NB_STAMP)

notebook: $(NB_STAMP)
	$(VENV)/bin/jupyter lab examples/lesson1.ipynb

# The docs site in site/: docs/*.md and the API reference rendered from the docstrings.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build site *.egg-info
