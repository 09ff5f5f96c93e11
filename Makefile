# hsynex developer and user commands. `make demo` and `make test` are the README's two commands.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST  := $(BIN)/python -m pytest
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install test test-fast test-slow demo bench lint clean validate validate-quick \
	validate-sensitivity invariance gpu-bundle

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The whole suite on the default backend (tensorflow), then the backend-sensitive tests
# (marked `backend`) again on torch.
test: install
	KERAS_BACKEND=tensorflow $(PYTEST) tests
	KERAS_BACKEND=torch $(PYTEST) -m backend tests

test-fast: install
	KERAS_BACKEND=torch $(PYTEST) -m "not slow" tests

demo: install
	KERAS_BACKEND=torch $(BIN)/python -m mri_hsynex.demo demo_out

bench: install
	KERAS_BACKEND=torch $(BIN)/python benchmarks/run_all.py

# Real T1 scans the shipped networks were not trained on, beside the held-out subjects of
# models/train_cascade.json: the 20 Mindboggle OASIS-TRT-20 T1s of ../shared. Once networks are
# trained on Mindboggle label maps, drop this (their hold-outs come from train_cascade.json).
# build/labels_mb (`mri_hsynex build-labels --mindboggle ... --o build/labels_mb --transfer-from
# ...`, docs/training_data.md), when present, gives those scans a second reference (their label
# maps' subunits) beside the teacher, which fails on most of them.
# build/labels/transferred (`build-labels --sd ... --transfer`: the SynthSeg maps with subunits
# voted from the subjects' maps; never used for training) adds 17 maps to the between-subject
# section; a folder that is not there is skipped.
VALIDATE_FLAGS ?= --real-extra oasis-trt-20 --real-reference build/labels_mb \
	--between-maps build/labels_mb build/labels/transferred

validate: install
	KERAS_BACKEND=torch $(BIN)/mri_hsynex validate --o docs $(VALIDATE_FLAGS)

# the paired sensitivity study alone (a few minutes): MODEL=runs/models to compare a checkpoint
validate-sensitivity: install
	KERAS_BACKEND=torch $(BIN)/mri_hsynex validate --sensitivity-only --o validate_out \
		$(if $(MODEL),--model $(MODEL))

validate-quick: install
	KERAS_BACKEND=torch $(BIN)/mri_hsynex validate --quick --o validate_out

# The "same anatomy, same answer" tables of docs/segment.md (issue 12): one real scan written in
# many ways, images with no brain, and the brain images that must not be refused.
INVARIANCE_SCAN ?= ../shared/data/subjects/sub-08/mri/T1.mgz
invariance: install
	KERAS_BACKEND=torch $(BIN)/python -m mri_hsynex.validate.invariance --i $(INVARIANCE_SCAN) \
		--doc docs/segment.md

# What a lent GPU machine (the workplace's `device` tool: Python 3.12 with PyTorch and CUDA, no
# network) needs beside the repository to continue training with models/device_train.sh: wheels
# of the packages it lacks and the label maps that carry subunits (GPU_LABELS: a build-labels
# output folder; its maps without 801-810 are left out). The model card, "Continue training",
# gives the call.
GPU_BUNDLE ?= build/gpu
GPU_LABELS ?= build/labels_fs
GPU_WHEELS ?= keras==3.12.0 namex==0.1.0 optree==0.20.0 nibabel==5.3.2
gpu-bundle: install
	rm -rf $(GPU_BUNDLE)
	mkdir -p $(GPU_BUNDLE)/wheels
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d $(GPU_BUNDLE)/wheels $(GPU_WHEELS)
	$(BIN)/python -m mri_hsynex.train.bundle maps $(GPU_LABELS) $(GPU_BUNDLE)/labels
	du -sh $(GPU_BUNDLE)

lint: install
	$(BIN)/ruff check mri_hsynex tests benchmarks

clean:
	rm -rf build demo_out bench_out validate_out .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
