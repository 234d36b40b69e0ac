#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs lint, type checks and tests.
# CI runs exactly this (see .ci/run); so does README command 2.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system-deps.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q -e '.[dev,bench]'

echo "== lint and types"
.venv/bin/ruff check python tests benches examples scripts
.venv/bin/mypy
.venv/bin/python -m mypy.stubtest dkron_exec._core
(cd rust && cargo clippy -q --workspace --all-targets -- -D warnings)

echo "== cargo test"
(cd rust && cargo test -q -p dkron-exec-core)

echo "== pytest"
# Dkron's own plugins are built with Go in the tests: missing Go fails them here instead of skipping.
export DKRON_EXEC_REQUIRE_GO=1
.venv/bin/python -m pytest tests -q --junitxml=build/junit-tests.xml
.venv/bin/python -m pytest benches -q --benchmark-disable --junitxml=build/junit-benches.xml
# Every test runs here: a skip (a missing service, tool or file) fails command 2.
.venv/bin/python scripts/no_skips.py build/junit-tests.xml build/junit-benches.xml

# The abi3 wheel, installed with no Rust toolchain on PATH, runs the sample job.
bash scripts/wheel-check.sh
