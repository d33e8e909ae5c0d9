# igwn-robot-get: the two commands a newcomer needs are `make demo` and
# `make test`; both set up what they need on a fresh Debian machine (as root).

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
PY36        := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.6.*/bin/python3.6) $(shell command -v python3.6))
PYNEWEST    := $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.1[3-9].*/bin/python3.1?)))
SHELL_FILES := entrypoint.sh scripts/*.sh .ci/run deploy/cron/cron-quiet
PYTEST_ARGS ?=

.PHONY: all bootstrap demo test lint unit e2e oldpython image bench clean help

all: help

help:
	@echo "make demo    start a local KDC and Vault emulator and fetch a real token"
	@echo "make test    install what tests need, then run every test and lint"
	@echo "make lint    ruff, vermin (Python 3.6), shellcheck, hadolint"
	@echo "make image   build the container image igwn-robot-get:latest"
	@echo "make bench   benchmark against igwn-robot-get 0.3.3"

bootstrap: $(VPY)

$(VPY): scripts/bootstrap.sh requirements-dev.txt
	PYTHON=$(PYTHON) scripts/bootstrap.sh
	@touch $(VPY)

demo: bootstrap
	scripts/demo.sh

test: bootstrap lint oldpython
	IGWN_REQUIRE_IMAGE=1 $(VPY) -m pytest -q -ra $(PYTEST_ARGS) tests
	$(VPY) bench/bench.py --reps 1 --json $(or $(TMPDIR),/tmp)/igwn-robot-get-bench-smoke.json

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/vermin --no-tips --violations -t=3.6- igwn_robot_get.py
	shellcheck $(SHELL_FILES)
	$(VENV)/bin/hadolint Dockerfile

# The tool must run on EL8's Python 3.6 with its old requests/gssapi, and on
# the newest Python here: the end-to-end smoke runs the tool under both.
oldpython: bootstrap
	scripts/python-venv.sh .venv36 "$(PY36)" "requests==2.27.1" "gssapi==1.7.3" "requests-gssapi==1.2.3" "certifi<2023" "urllib3<1.27"
	scripts/python-venv.sh .venv-newest "$(PYNEWEST)" requests gssapi requests-gssapi
	IGWN_TOOL_PYTHON=$(CURDIR)/.venv36/bin/python $(VPY) -m pytest -q -p no:cacheprovider tests/test_e2e_core.py
	IGWN_TOOL_PYTHON=$(CURDIR)/.venv-newest/bin/python $(VPY) -m pytest -q -p no:cacheprovider tests/test_e2e_core.py

image: bootstrap
	scripts/build-image.sh

bench: bootstrap
	$(VPY) bench/bench.py

clean:
	rm -rf .venv .venv36 .venv-newest .demo bench/.venv-anchor bench/.venv-ours .pytest_cache .ruff_cache .hypothesis
