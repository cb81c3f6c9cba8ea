#!/usr/bin/env bash
# The project's test command (the README's second command, and what .ci/run runs).
# When ../shared (the oracle, real Cassandra SSTables) is beside the checkout, it first makes a Python
# venv with the oracle's requirements so that the interop tests can run; without ../shared those
# tests say so and the rest runs (with CI=true they fail instead).
# Unless KMIP_TEST_DIR already names a running server, it also starts a real KMIP server (PyKMIP
# 0.11.0 from PyPI, installed once into .kmip-test/venv) on a free loopback port for tests/it/kmip.rs,
# and stops it when the tests end. The tests are built with the test-only `failpoints` feature.
# The fault sweep (tests/it/fault_sweep.rs) needs root (a private PID namespace) and strace, which is
# installed here when missing.
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
if [[ -z ${KMIP_TEST_DIR:-} ]]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if tools/kmip-server.sh start .kmip-test "$port" >&2; then
    export KMIP_TEST_DIR="$PWD/.kmip-test"
    trap 'tools/kmip-server.sh stop "$KMIP_TEST_DIR"' EXIT
  else
    echo "tools/test.sh: could not start the KMIP server; tests/it/kmip.rs will say so (and fail with CI=true)" >&2
  fi
fi
# tests/it/ansible.rs runs the cluster rollout (deploy/ansible) with real ansible-core from PyPI,
# installed once into .ansible-test/venv; without it the rollout tests say so (and fail with CI=true).
if [[ -z ${ANSIBLE_PLAYBOOK:-} ]]; then
  if ! .ansible-test/venv/bin/ansible-playbook --version >/dev/null 2>&1; then
    echo "tools/test.sh: installing ansible-core 2.19 into .ansible-test/venv (tests/it/ansible.rs)" >&2
    rm -rf .ansible-test/venv
    python3 -m venv .ansible-test/venv &&
      .ansible-test/venv/bin/pip install -q 'ansible-core==2.19.*' >&2 ||
      echo "tools/test.sh: could not install ansible-core; tests/it/ansible.rs says so (and fails with CI=true)" >&2
  fi
  if .ansible-test/venv/bin/ansible-playbook --version >/dev/null 2>&1; then
    export ANSIBLE_PLAYBOOK="$PWD/.ansible-test/venv/bin/ansible-playbook"
  fi
fi
# tests/it/fault_sweep.rs compares its system-call injector's counts with strace's (Debian package
# strace); with CI=true it fails when strace is missing.
if ! command -v strace >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "tools/test.sh: installing strace (tests/it/fault_sweep.rs)" >&2
    if ! { apt-get install -y -q strace >&2 || { apt-get update -q >&2 && apt-get install -y -q strace >&2; }; }; then
      echo "tools/test.sh: could not install strace; tests/it/fault_sweep.rs says so (and fails with CI=true)" >&2
    fi
  else
    echo "tools/test.sh: strace is missing and cannot be installed here (needs root and apt-get): install the strace package; tests/it/fault_sweep.rs says so (and fails with CI=true)" >&2
  fi
fi
# `failpoints`: the test-only crash switch (src/rekey/failpoint.rs) that tests/it/crash.rs drives;
# production builds do not have it. `--no-fail-fast`: a failing test binary does not keep the
# others from running (and reporting).
cargo test --release --features failpoints --no-fail-fast "$@"
