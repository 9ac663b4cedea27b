# Two commands set everything up from a fresh clone (Python 3.11, offline registries):
#   make book   -> .venv, install, execute every notebook, build _build/html
#   make test   -> .venv, install, nbval over book/, build the book, pytest (unit, property,
#                  Triton interpreter, doctests, headless-Chromium test of the built book)
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAME ?= boustany

MATHJAX := _build/mathjax/es5/tex-mml-chtml.js
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install book test sweep bench serve clean browser-deps

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# nbval first proves that the committed outputs equal a fresh run; the book is then built from
# those outputs (execution off) and checked in the browser with the rest of the tests.
test: $(STAMP) browser-deps _build/_config_test.yml
	$(BIN)/python -m pytest -n 2 --dist loadfile --nbval book --nbval-sanitize-with tests/nbval_sanitize.cfg
	$(BIN)/jupyter-book build . -W -n --keep-going --config _build/_config_test.yml
	$(BIN)/python -m pytest -n 2 --dist loadfile tests mtlib --doctest-modules

_build/_config_test.yml: _config.yml $(STAMP)
	mkdir -p _build
	$(BIN)/python -c "import yaml; c = yaml.safe_load(open('_config.yml')); \
	c['execute']['execute_notebooks'] = 'off'; yaml.safe_dump(c, open('$@', 'w'), sort_keys=False)"

# Headless Chromium (Debian) and a pinned local MathJax 3 for tests/test_book_browser.py.
browser-deps: $(CHROMIUM) $(MATHJAX)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

$(MATHJAX):
	mkdir -p _build/mathjax
	cd _build && npm pack --silent mathjax@3.2.2 >/dev/null
	tar -xzf _build/mathjax-3.2.2.tgz -C _build/mathjax --strip-components=1
	rm _build/mathjax-3.2.2.tgz
	touch $@

sweep: $(STAMP)
	$(BIN)/python -m mtlib.sweep $(NAME) --csv book/data/sweep_$(NAME).csv

bench: $(STAMP)
	$(BIN)/python benchmarks/maxpool.py

serve:
	$(BIN)/python -m http.server --directory _build/html 8000

clean:
	rm -rf _build
