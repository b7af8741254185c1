#!/usr/bin/env bash
# Reliability rounds (kill -9 per backend, app down, PostgreSQL restart, replicas, soak); figures
# go to docs/reliability.md. `--quick` runs them at reduced scale. Needs PostgreSQL for the
# PostgreSQL scenarios (LOCKGATE_TEST_POSTGRES, default postgresql://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install --quiet -e '.[test]'; }
exec .venv/bin/python scripts/reliability.py "$@"
