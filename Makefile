# The course's two commands (see README.md):
#   make course   install everything into .venv and build the book site
#   make test     install what the tests need and run the whole test suite
# Both are idempotent: re-running them only redoes what changed.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: course test install install-test book
.DEFAULT_GOAL := course

course: install book

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# A stamp per requirements file, so an unchanged environment is not reinstalled.
$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test
	bash scripts/install_system_deps.sh

book: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/build_book.sh

test: install install-test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadfile
