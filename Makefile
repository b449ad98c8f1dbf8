# cast-kit: `make reproduce` and `make test` set everything up on a fresh machine.
# PROFILE=smoke (default, CPU, minutes) | mini (CPU, hours) | paper (GPUs, real data).

PYTHON ?= python3.11
PROFILE ?= smoke
# the supplementary tables, as castlib.paper.REPRODUCED_TABLES types them once (read by the venv's python, or by
# PYTHON before setup made it: castlib.paper imports nothing else)
TABLES ?= $(shell $(firstword $(wildcard $(VENV)/bin/python) $(PYTHON)) -c \
  'from castlib.paper import REPRODUCED_TABLES; print(*REPRODUCED_TABLES)')
DATASETS ?= cityscapes ade20k
JOBS ?= 1
# NPROC > 1: the training commands run under torchrun on NPROC processes (GPUs) of this machine, each run's global
# batch split over them (DESIGN 9); give the GPUs either to torchrun (NPROC) or to table workers (JOBS), not both
NPROC ?= 1
# the paper profile's real datasets (README "On a GPU box"); DEVICE=cpu runs paper on the CPU on purpose
CITYSCAPES_ROOT ?=
ADE20K_ROOT ?=
DEVICE ?=
DEVICE_ARGS := $(if $(DEVICE),--set device=$(DEVICE))
CITYSCAPES_ARGS := $(if $(CITYSCAPES_ROOT),--data-root "$(CITYSCAPES_ROOT)") $(DEVICE_ARGS)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TRAIN_PY := $(if $(filter 1,$(NPROC)),$(PY),$(PY) -m torch.distributed.run --standalone --nproc_per_node $(NPROC))
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
# smoke writes the committed results/{tables,figures}; another profile its own folder (results/mini/...)
RESULTS ?= $(if $(filter smoke,$(PROFILE)),results,results/$(PROFILE))

.PHONY: setup test test-unit test-integration test-notebooks test-gpu test-slow test-all test-browser reproduce bench gpu-check lint notebooks notebook-filter clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## setup: create .venv and install castlib with its pinned dependencies (skipped when done)
setup: $(STAMP)

## test: the test suite but the slow, gpu and browser tiers: unit, integration and notebooks (tests/README.md)
test: setup
	$(PY) -m pytest -q -m "not slow and not gpu and not browser" --durations=25

## test-unit: the unit tier, no training (under 2 minutes on 2 cores)
test-unit: setup
	$(PY) -m pytest -q -m unit --durations=10

## test-integration: the integration tier: short trainings of the smoke stages, torchrun, whole models run
test-integration: setup
	$(PY) -m pytest -q -m integration --durations=25

## test-notebooks: the notebooks executed headless by papermill on the smoke profile
test-notebooks: setup
	$(PY) -m pytest -q -m notebooks --durations=10

## test-gpu: the gpu tier (CUDA-only tests; skipped without a CUDA device)
test-gpu: setup
	$(PY) -m pytest -q -m gpu -rs

## test-slow: the slow reliability tests (kill `make reproduce` and rerun; a smoke run twice, bit-identical)
test-slow: setup
	$(PY) -m pytest -q -m slow tests/reliability

## test-all: every test, slow ones too
test-all: setup
	$(PY) -m pytest -q

BROWSER_STAMP := $(VENV)/.browser-stamp
$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,browser]"
	touch $(BROWSER_STAMP)

# Debian's chromium when no Chromium or Chrome is on PATH (CHROMIUM=/path/to/chrome uses that one instead)
CHROMIUM ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

## test-browser: the notebooks as a reader opens them: JupyterLab in the background and headless Chromium (Debian's
## chromium, installed when missing) run 01, 03 and 05 (smoke, a small synthetic set), check every figure shows
## inline, move 01's slider and press 03's and 05's buttons, and run the committed 01 to see the lab leave git
## clean; screenshots to results/browser/ (a few minutes)
test-browser: $(BROWSER_STAMP)
	@if [ -z "$(CHROMIUM)" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
	  && ! command -v google-chrome >/dev/null 2>&1; then \
	  echo "installing Debian's chromium (apt-get)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null || { echo "error: could not install chromium: set CHROMIUM=/path/to/chrome"; exit 1; }; \
	fi
	CHROMIUM="$(CHROMIUM)" $(PY) -m pytest -q -m browser -rs --durations=10 tests/browser

## reproduce: data, splits, the CAST pipeline on DATASETS, efficiency, every notebook in order (papermill):
## executed notebooks to RESULTS/notebooks/, supplementary TABLES to RESULTS/tables/, figures to RESULTS/figures/
## (RESULTS: results on smoke, results/PROFILE otherwise); the tables' runs train first, JOBS processes at a time,
## or each on NPROC processes under torchrun (`make reproduce PROFILE=paper NPROC=8`)
reproduce: setup
	for d in $(DATASETS); do \
	  root=$$(if [ $$d = cityscapes ]; then echo "$(CITYSCAPES_ROOT)"; else echo "$(ADE20K_ROOT)"; fi); \
	  $(PY) -m castlib prepare --profile $(PROFILE) --dataset $$d $${root:+--data-root "$$root"} $(DEVICE_ARGS) || exit 1; \
	done
	for d in $(DATASETS); do \
	  root=$$(if [ $$d = cityscapes ]; then echo "$(CITYSCAPES_ROOT)"; else echo "$(ADE20K_ROOT)"; fi); \
	  $(TRAIN_PY) -m castlib train --profile $(PROFILE) --dataset $$d $${root:+--data-root "$$root"} $(DEVICE_ARGS) \
	    --stage cast || exit 1; \
	done
	$(TRAIN_PY) -m castlib table $(TABLES) --profile $(PROFILE) $(CITYSCAPES_ARGS) --jobs $(JOBS) --out $(RESULTS)/tables
	$(PY) -m castlib efficiency --profile $(PROFILE) --dataset cityscapes $(CITYSCAPES_ARGS) --out $(RESULTS)/efficiency
	$(PY) -m castlib notebooks --profile $(PROFILE) $(CITYSCAPES_ARGS) --results $(RESULTS) $(NOTEBOOKS) --tables $(TABLES)

## bench: speed and memory benchmarks; ratios written to results/benchmarks/
bench: setup
	$(PY) -m benchmarks --out $(RESULTS)/benchmarks

## gpu-check: the paper path on one GPU in under 10 minutes (random weights, synthetic 1024x2048 images):
## step times and memory, FPS, L_pxl fast vs reference, every stage for 2 iterations -> results/benchmarks/gpu_check.json
## (without CUDA: the same parts at smoke sizes)
gpu-check: setup
	$(PY) -m benchmarks.gpu_check --out results/benchmarks

## lint: ruff over the package, tests, benchmarks and notebooks
lint: setup
	$(PY) -m ruff check castlib tests benchmarks notebooks

## notebooks: pair notebooks/NN_*.py (the reviewed source) with their .ipynb (jupytext --sync)
notebooks: setup
	$(PY) -m jupytext --sync $(NOTEBOOKS)

NBSTRIPOUT := "$(abspath $(PY))" -m nbstripout --keep-id --extra-keys metadata.language_info
## notebook-filter: git reads notebooks/*.ipynb through nbstripout (.gitattributes): a notebook run and saved in
## JupyterLab keeps its outputs on disk, and git status shows no change; what is committed stays output-free
notebook-filter: setup
	git config filter.nbstripout.clean '$(NBSTRIPOUT)'
	git config filter.nbstripout.smudge cat
	git config diff.ipynb.textconv '$(NBSTRIPOUT) -t'

clean:
	rm -rf $(VENV) data $(RESULTS)/notebooks
