# `make test` and `make study` install whatever is missing into .venv/ first.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat constraints.txt setup.cfg tools/install.sh | sha1sum | cut -c1-12)
STUDY ?= local

.PHONY: install test study lint clean-results

install: $(STAMP)

$(STAMP): constraints.txt setup.cfg tools/install.sh
	./tools/install.sh
	@rm -f $(VENV)/.installed-*
	@touch $@

test: install
	$(PYTHON) -m pytest

study: install
	$(PYTHON) -m launch.study --name $(STUDY)

lint: install
	$(VENV)/bin/ruff check bologan scaling energy analysis launch tests

clean-results:
	rm -rf results/
