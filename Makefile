# Two commands on a fresh machine: `make demo` (set up, then run the quickstart recipe) and
# `make test` (set up, then lint and run the tests). Both create .venv on first use.
# `make docs` builds the documentation site (strict: a broken link or missing page fails);
# `make docs-serve` serves it at http://127.0.0.1:8000 while you edit.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.fgvc-installed

.PHONY: install demo test lint docs docs-serve clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs,export,slurm,albumentations]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fgvc run recipes/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) runs site
