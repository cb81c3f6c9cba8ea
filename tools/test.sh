#!/usr/bin/env bash
# The project's test command (the README's second command, and what .ci/run runs).
# When ../shared (the oracle, real Cassandra SSTables) is beside the checkout, it first makes a Python
# venv with the oracle's requirements so that the interop tests can run; without ../shared those
# tests say so and the rest runs (with CI=true they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f ../shared/oracle/requirements.txt ]]; then
  if ! .venv/bin/python -c 'import cryptography, lz4' 2>/dev/null; then
    echo "tools/test.sh: creating .venv for the oracle (../shared/oracle/requirements.txt)" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q -r ../shared/oracle/requirements.txt
  fi
  export ORACLE_PYTHON="$PWD/.venv/bin/python"
fi
exec cargo test --release "$@"
