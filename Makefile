# Two commands do all the set-up: `make demo` (the main job) and `make test`.
# Each creates .venv and installs what is missing; with everything installed they start at once.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fastlearn-installed

.PHONY: demo test test-slow bench clean

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

test: $(STAMP)
	@$(call PYTEST,)

# Real photos (../shared/data/dogscats) with real weights; CI runs these too.
test-slow: $(STAMP)
	@$(call PYTEST,-m slow)

bench: $(STAMP)
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
