# rainier: `make demo` and `make test` work on a fresh machine; `make install` is the shared set-up.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Every install takes the exact versions in the lock; `make lock` refreshes it on purpose.
LOCK := requirements.lock
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.7.0
# `make lock LOCK_FLAGS=` keeps the pins it has and only adds what a new dependency needs.
LOCK_FLAGS ?= --upgrade

.PHONY: install lock vllm lock-vllm demo test test-fast lint format bench clean

install: $(STAMP)

# The project itself goes in without build isolation, so its build backend is the locked setuptools
# too and nothing is taken from the registry at whatever version it serves that day.
$(STAMP): $(LOCK) pyproject.toml Makefile
	@if [ "$$(id -u)" = 0 ] && ! command -v bwrap >/dev/null 2>&1; then \
		bash scripts/install-bubblewrap.sh >/dev/null || echo "bubblewrap could not be installed; tasks will not be sandboxed" >&2; \
	fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

# Resolves pyproject.toml's ranges (every extra) and requirements-pins.in to the newest versions the
# registries serve today. pip-tools drives pip's own resolver, so torch comes from the CPU build on
# disk that pip finds, as at install time.
lock:
	test -x .venv-lock/bin/python || python3 -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	.venv-lock/bin/pip-compile --quiet $(LOCK_FLAGS) --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--output-file $(LOCK) pyproject.toml requirements-pins.in

# vLLM, the second serving engine (`engine: vllm`), in a venv of its own: its pins are not the
# project's. torchvision's wheel is built against CUDA torch (its operators do not register
# beside the CPU torch: `torchvision::nms does not exist`) and torchaudio's and torchcodec's
# against older torches (their libraries fail to load); vLLM and transformers import them
# whenever they are installed, so they go: text models need none of them.
VLLM_VENV ?= .venv-vllm
VLLM_LOCK := requirements-vllm.lock
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): $(VLLM_LOCK) Makefile
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(VLLM_VENV)/bin/python -m pip install -q -r $(VLLM_LOCK)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python scripts/vllm_dist_alias.py
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

lock-vllm:
	test -x .venv-lock/bin/python || python3 -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	.venv-lock/bin/pip-compile --quiet $(LOCK_FLAGS) --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--output-file $(VLLM_LOCK) requirements-vllm.in

demo: install
	$(VENV)/bin/rainier demo

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) .venv-lock build *.egg-info src/*.egg-info
