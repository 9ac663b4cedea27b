# Two commands set everything up from a fresh clone (Python 3.11, offline registries):
#   make book    -> .venv, install, execute every notebook (one per core at a time), build _build/html
#   make test    -> .venv, install, ruff, nbval over book/ natively and with the CPU instruction
#                   sets capped, doctests the same two ways, build the book, pytest (unit,
#                   property, Triton interpreter, headless Chromium on the book and the notebooks)
#   make outputs -> re-execute every notebook in place (refresh the committed outputs on purpose)
#   make check   -> the inner loop (under 2 minutes): ruff, then tests/mtlib without the slow tests
#   make test-torch-next -> a second venv with torch 2.14.1: every chapter under nbval-lax, tests/mtlib
#                   and the doctests
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

# Another CPU, simulated: MKL, ATen and oneDNN pick kernels per CPU at run time, so the last bits of
# float results differ between machines. Committed outputs and doctests must survive these caps.
CAPPED := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 OMP_NUM_THREADS=1
NBVAL := $(BIN)/python -m pytest -n 2 --dist loadfile -p no:cacheprovider -q -rf \
	--nbval book --nbval-sanitize-with tests/nbval_sanitize.cfg
DOCTEST := $(BIN)/python -m pytest -p no:cacheprovider -q -rf --doctest-modules mtlib
# The book build keeps its execution reports; on failure they are printed, so the CI log says why.
REPORTS := _build/html/reports

.PHONY: install book test check outputs lint sweep bench serve clean browser-deps show-reports test-colab \
	test-torch-next

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The chapters run two at a time (jupyter-cache's local-parallel executor, one process per core)
# into the book's execution cache, then the build finds each of them there and executes only what
# is not cached. A chapter that fails here is executed again by the build, which reports why.
JCACHE := JUPYTERCACHE=_build/.jupyter_cache $(BIN)/jcache

book: $(STAMP)
	mkdir -p _build/.jupyter_cache
	$(JCACHE) notebook add $(sort $(wildcard book/*.ipynb)) >/dev/null
	$(JCACHE) project execute --executor local-parallel --timeout 300 || true
	$(BIN)/jupyter-book build . -W -n --keep-going || { $(MAKE) --no-print-directory show-reports; exit 1; }

show-reports:
	@for f in $(REPORTS)/*; do [ -f "$$f" ] && { echo "=== $$f"; cat "$$f"; }; done; true

# nbval first proves that the committed outputs equal a fresh run; the book is then built from
# those outputs (execution off) and checked in the browser with the rest of the tests.
# Each nbval failure prints the failing cell's diff (committed vs fresh output) in the log.
test: $(STAMP) browser-deps _build/_config_test.yml
	$(BIN)/ruff check .
	$(NBVAL)
	$(CAPPED) $(NBVAL)
	$(CAPPED) $(DOCTEST)
	$(BIN)/jupyter-book build . -W -n --keep-going --config _build/_config_test.yml \
		|| { $(MAKE) --no-print-directory show-reports; exit 1; }
	$(BIN)/python -m pytest -n 2 --dist loadfile -p no:cacheprovider -rf --durations=15 tests mtlib --doctest-modules

# The inner loop while editing mtlib: lint, then its tests without those marked slow (papermill,
# Dask, the Triton interpreter, training runs; see [tool.pytest.ini_options] markers), without
# notebooks or the browser. make test runs everything.
check: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -p no:cacheprovider -q -rf --durations=5 -m "not slow" tests/mtlib

# Refresh the committed outputs on purpose: execute every notebook in place with the pinned
# kernel (the .venv's python3), then prove with nbval that a fresh run reproduces them.
outputs: $(STAMP)
	for nb in book/*.ipynb; do \
		echo "executing $$nb"; \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --log-level=WARN \
			--ExecutePreprocessor.timeout=900 --ExecutePreprocessor.kernel_name=python3 "$$nb"; \
	done
	$(NBVAL)

# The Colab-like leg: a fresh venv with Colab's versions, then `pip install .[book]` as a reader's
# set-up cell does (it must keep those versions), then every fast chapter run by papermill from a
# folder outside the repository. Python 3.13 (Colab's) only byte-compiles mtlib: no torch wheel
# for it here.
COLAB_VENV := _build/venv-colab
# (a pyenv shim may exist without a working 3.13 behind it: the recipe checks that it runs)
PY313 := $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))

test-colab:
	rm -rf $(COLAB_VENV) build  # build/: setuptools would reuse stale copies of moved modules
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/colab/requirements.txt
	$(COLAB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check ".[book]"
	$(COLAB_VENV)/bin/python tests/colab/run_chapters.py
	if [ -n "$(PY313)" ] && $(PY313) -c pass 2>/dev/null; then \
		$(PY313) -W error -m compileall -q -f -x '/_build/' mtlib >/dev/null && echo "mtlib byte-compiles on Python 3.13"; \
	else echo "no Python 3.13 here: the 3.13 byte-compile check is skipped"; fi

# The next PyTorch: a second venv with torch 2.14.1 and every other pin of requirements.txt (triton:
# the version torch 2.14.1 requires, ~=3.8.0), then every chapter under nbval-lax (each cell must run
# and its asserts hold; outputs are not compared, they are committed from torch 2.13.0) and mtlib's
# pytest suite with its doctests. pip takes torch 2.14.1 and its CUDA libraries (about 5.5 GB) from local disk here.
NEXT_VENV := _build/venv-next
NEXT_TORCH := 2.14.1
NEXT_TRITON := 3.8.0
# A fresh inductor cache with the fresh venv: the cache key of a compiled graph does not cover a
# custom op's fake kernel, so a cache left by an older mtlib (another companion dtype) fails torch 2.14's
# runtime dtype check.
NEXT_ENV := TORCHINDUCTOR_CACHE_DIR=$(abspath $(NEXT_VENV))/inductor-cache

test-torch-next:
	rm -rf $(NEXT_VENV)
	$(PYTHON) -m venv $(NEXT_VENV)
	sed -e 's/^torch==.*/torch==$(NEXT_TORCH)/' -e 's/^triton==.*/triton==$(NEXT_TRITON)/' requirements.txt \
		> $(NEXT_VENV)/requirements.txt
	$(NEXT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(NEXT_VENV)/requirements.txt
	$(NEXT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(NEXT_VENV)/bin/python -c "import torch; assert torch.__version__.startswith('$(NEXT_TORCH)'), torch.__version__"
	$(NEXT_ENV) $(NEXT_VENV)/bin/python -m pytest -n 2 --dist loadfile -p no:cacheprovider -q -rf --nbval-lax book
	$(NEXT_ENV) $(NEXT_VENV)/bin/python -m pytest -n 2 --dist loadfile -p no:cacheprovider -q -rf tests/mtlib mtlib \
		--doctest-modules

_build/_config_test.yml: _config.yml $(STAMP)
	mkdir -p _build
	$(BIN)/python -c "import yaml; c = yaml.safe_load(open('_config.yml')); \
	c['execute']['execute_notebooks'] = 'off'; yaml.safe_dump(c, open('$@', 'w'), sort_keys=False)"

# Headless Chromium (Debian) and a pinned local MathJax 3 for tests/book/test_book_browser.py.
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

# make sweep NAME=training [DASK=tcp://host:8786]: on an existing Dask cluster when DASK is set, else
# a local pool; resumes in _build/sweeps/NAME; the book's table goes into the package (mtlib/sweep/results).
sweep: $(STAMP)
	$(BIN)/python -m mtlib.sweep $(NAME) --csv mtlib/sweep/results/$(NAME).csv $(if $(DASK),--scheduler $(DASK))

bench: $(STAMP)
	$(BIN)/python benchmarks/maxpool.py --dtypes float32,bfloat16 --reps 11 --threads 2
	$(CAPPED) $(BIN)/python benchmarks/maxpool.py --dtypes float32,bfloat16 --reps 11 --threads 1 \
		--setting capped --append
	$(BIN)/python benchmarks/lexicographic.py
	$(BIN)/python benchmarks/perturbed.py

serve:
	$(BIN)/python -m http.server --directory _build/html 8000

clean:
	rm -rf _build

# Lint the library, the tests, the benchmarks and the chapters (config: [tool.ruff] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
