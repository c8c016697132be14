# The two commands of the README. Both set up the project-local virtual environment first and are safe
# to run again: the environment is rebuilt only when pyproject.toml changes.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: repro test bench setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

repro: $(STAMP)
	. $(VENV)/bin/activate && python -m kepitfalls.warm around dvc repro

test: $(STAMP)
	. $(VENV)/bin/activate && python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=15

bench: $(STAMP)
	. $(VENV)/bin/activate && python scripts/bench.py
