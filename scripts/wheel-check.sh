#!/usr/bin/env bash
# Builds the one abi3 wheel (every CPython >= 3.10 on Linux x86_64) into dist/, installs it into a
# fresh venv with no Rust toolchain on PATH and no source builds allowed, and runs the sample job
# from it. Called at the end of scripts/test.sh; needs the dev venv (.venv, for maturin).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== wheel"
rm -f dist/dkron_exec-*.whl
# manylinux_2_34: the newest glibc symbol the extension uses, built on this machine, is GLIBC_2.34;
# maturin checks the symbols against the tag and refuses the build if one is newer, so the tag stays
# honest (glibc 2.34 or later: Debian 12, Ubuntu 22.04, RHEL 9). An older tag needs an older glibc
# to build on (a manylinux container) or maturin's --zig.
.venv/bin/maturin build --release --compatibility manylinux_2_34 --out dist
wheels=(dist/dkron_exec-*.whl)
[ ${#wheels[@]} -eq 1 ] || { echo "expected one wheel in dist/, found: ${wheels[*]}" >&2; exit 1; }
wheel=${wheels[0]}
case "$wheel" in
*-cp310-abi3-manylinux_2_34_x86_64.whl) ;;
*) echo "not an abi3 manylinux_2_34 x86_64 wheel for CPython >= 3.10: $wheel" >&2; exit 1 ;;
esac
echo "built $wheel"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# PATH without any Rust toolchain: a source build would fail rather than pass unnoticed.
clean_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -E '/\.?cargo/bin|/\.?rustup' | paste -sd: -)
if PATH=$clean_path command -v cargo >/dev/null 2>&1; then
    echo "cargo is still on the cleaned PATH ($(PATH=$clean_path command -v cargo)); --only-binary still forbids a build" >&2
fi
PATH=$clean_path python3 -m venv "$work/venv"
PATH=$clean_path "$work/venv/bin/pip" install -q --only-binary :all: "$wheel"

# The installed package, not the source tree, runs the sample job.
(
    cd "$work"
    PATH=$clean_path venv/bin/python -c 'import dkron_exec, sys; assert dkron_exec.__file__.startswith(sys.prefix), dkron_exec.__file__'
)
PATH=$clean_path DKRON_EXEC_LOG_DIR="$work/logs" "$work/venv/bin/dkron-exec" run examples/sample-job.json \
    --store "$work/executions.db" > "$work/run.txt" 2>&1 || { cat "$work/run.txt"; exit 1; }
grep -q "report from sample-report" "$work/run.txt" && grep -rqs "report from sample-report" "$work/logs" ||
    { cat "$work/run.txt"; echo "the sample job did not run from the wheel" >&2; exit 1; }
echo "the sample job ran from the installed wheel ($(wc -c < "$wheel") bytes)"
