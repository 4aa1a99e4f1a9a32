# `make test` and `make study` install whatever is missing into .venv/ first.
# TF_BUILD=gpu|cpu|auto picks the TensorFlow build (and Horovod with or without NCCL):
#   make install TF_BUILD=gpu     on a GPU cluster's login node (needs a CUDA 12 toolkit: module load cuda)
#   make plan TF_BUILD=gpu        says what would be installed, installs nothing
# Without TF_BUILD the build .venv was made with is kept (.venv/.tf-build), else auto (the GPU build
# only where nvidia-smi lists a GPU). The stamp names the build, so `make test` after
# `make install TF_BUILD=gpu` does not install again.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
TF_BUILD ?= $(shell cat $(VENV)/.tf-build 2>/dev/null || echo auto)
INSTALL_FILES := constraints.txt setup.cfg tools/install.sh tools/install_plan.py
STAMP := $(VENV)/.installed-$(shell cat $(INSTALL_FILES) | sha1sum | cut -c1-12)-$(TF_BUILD)
STUDY ?= local

.PHONY: install plan test study lint clean-results

install: $(STAMP)

$(STAMP): $(INSTALL_FILES)
	VENV=$(VENV) TF_BUILD=$(TF_BUILD) ./tools/install.sh
	@rm -f $(VENV)/.installed-*
	@touch $@

plan:
	@VENV=$(VENV) TF_BUILD=$(TF_BUILD) ./tools/install.sh --print-plan

test: install
	$(PYTHON) -m pytest

study: install
	$(PYTHON) -m launch.study --name $(STUDY)

lint: install
	$(VENV)/bin/ruff check bologan scaling energy analysis launch tests tools

clean-results:
	rm -rf results/
