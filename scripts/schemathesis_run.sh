#!/usr/bin/env bash
# Property-based API test of the memory REST API against its own OpenAPI document.
#
# Starts a throw-away memchat (offline mode, local embedder, data in a temp dir) on a free loopback
# port (python -m app.testkit.serve_for), runs Schemathesis (every phase: examples, coverage, fuzzing, stateful) on /api/v1/memory*
# with every check except `unsupported_method` (see below), and stops the server. Exit code: the
# Schemathesis one (0 = no failure). Needs the `dev` extra: .venv/bin/pip install -e '.[dev]'.
#
#   scripts/schemathesis_run.sh                 # 30 examples per operation (~1 min)
#   MAX_EXAMPLES=200 scripts/schemathesis_run.sh
#
# Excluded checks (both about the `Allow` header, neither about the memory routes themselves):
# - `unsupported_method` (ST204): a 405 for an undeclared method (TRACE ...) has no `Allow` header,
#   because app/api/errors.py renders every HTTPException as a fresh response;
# - `allow_header_conformance` (ST205): Litestar 2.25's automatic OPTIONS answer lists only the methods
#   of the first handler registered for a path (its OPTIONS handler is kept when later handlers for
#   the same path are merged into the route) -- a Litestar bug, also with Controllers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ST=${SCHEMATHESIS:-.venv/bin/schemathesis}
MAX_EXAMPLES=${MAX_EXAMPLES:-30}
KEY="schemathesis-$RANDOM$RANDOM"

# app.testkit.serve_for starts the server (MemchatServer: free port, temp data dir, waits for /healthz),
# runs the command with {port} filled in, stops the server, and fails the run on a server traceback.
exec "$PY" -m app.testkit.serve_for --api-keys "$KEY=org1" --fail-on-traceback -- \
  "$ST" run "http://127.0.0.1:{port}/schema/openapi.json" \
  --include-path-regex '^/api/v1/memory' \
  -H "Authorization: Bearer $KEY" \
  --checks all --exclude-checks unsupported_method,allow_header_conformance \
  --max-examples "$MAX_EXAMPLES" --workers 1 --seed "${SEED:-1}" --no-color
