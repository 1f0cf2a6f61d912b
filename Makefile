# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv, install what they need, and run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
# torch as it lies on this machine's disk (x86_64: CUDA build that runs on the CPU; aarch64: CPU build).
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test install bench clean browser-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Headless Chromium + playwright-core for the browser test of the TensorBoard tab.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed: the browser test will be skipped"; \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; }
	@if command -v npm >/dev/null 2>&1 && [ ! -d tests/browser/node_modules/playwright-core ]; then \
	  (cd tests/browser && npm install --silent --no-audit --no-fund >/dev/null) || echo "playwright-core could not be installed: the browser test will be skipped"; fi

demo: install
	$(BIN)/torch-roofline profile torchvision:resnet18 --input-shape 8,3,224,224 --out out/demo

test: install browser-deps
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) out build *.egg-info
