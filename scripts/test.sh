#!/usr/bin/env bash
# Install lockgate with its test dependencies into .venv and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
# The JavaScript SDK tests serve tests/e2e/js_app with inngest v3 and v4 from npm.
if command -v npm >/dev/null; then
  pids=()
  for sdk in tests/e2e/js_app/v3 tests/e2e/js_app/v4; do  # both at once: each mostly waits on the registry
    (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
fi
# The dashboard's browser tests drive Debian's chromium (Playwright downloads no browser here).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
fi
# Every backend test runs on PostgreSQL too; here an unreachable server is a failure, not a skip.
export LOCKGATE_REQUIRE_POSTGRES=1
# Most e2e time is spent waiting on timers and subprocesses, so three workers; each test module
# (and its servers) stays on one worker.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 3 --dist loadscope "$@"
