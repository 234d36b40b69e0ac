#!/usr/bin/env bash
# Builds the one abi3 wheel (every CPython >= 3.10 on Linux x86_64 with glibc >= 2.17) into dist/,
# checks its platform tag with auditwheel, installs it with the serve extra into a fresh venv with no
# Rust toolchain on PATH and no source builds allowed, runs the sample job from it, and runs
# `dkron-exec serve` on a folder with a job every second until SIGTERM. Called at the end of
# scripts/test.sh; needs the dev venv (.venv: maturin, ziglang, auditwheel).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== wheel"
rm -f dist/dkron_exec-*.whl
# manylinux_2_17: zig links the extension against glibc 2.17's symbol versions whatever this machine's
# glibc is (maturin --zig; zig comes from the ziglang package, found as `python3 -m ziglang`, hence
# the venv first on PATH). The code calls nothing newer: clone3, pidfd and statx are raw syscalls
# (rustix, libc::syscall) or looked up at run time by Rust's std. maturin refuses the build if a
# symbol is newer than the tag, and auditwheel checks it again below.
PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin build --release --zig --compatibility manylinux_2_17 --out dist
wheels=(dist/dkron_exec-*.whl)
[ ${#wheels[@]} -eq 1 ] || { echo "expected one wheel in dist/, found: ${wheels[*]}" >&2; exit 1; }
wheel=${wheels[0]}
case "$wheel" in
*-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl) ;;
*) echo "not an abi3 manylinux_2_17 x86_64 wheel for CPython >= 3.10: $wheel" >&2; exit 1 ;;
esac
echo "built $wheel"
audit=$(.venv/bin/auditwheel show "$wheel")
echo "$audit"
# auditwheel wraps its lines: join them before looking for the tag it derives from the symbols.
printf '%s' "$audit" | tr '\n' ' ' | grep -q 'consistent with the following platform tag: "manylinux_2_17_x86_64"' ||
    { echo "auditwheel does not find $wheel consistent with manylinux_2_17_x86_64" >&2; exit 1; }

work=$(mktemp -d)
serve_pid=
cleanup() {
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# PATH without any Rust toolchain: a source build would fail rather than pass unnoticed.
clean_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -E '/\.?cargo/bin|/\.?rustup' | paste -sd: -)
if PATH=$clean_path command -v cargo >/dev/null 2>&1; then
    echo "cargo is still on the cleaned PATH ($(PATH=$clean_path command -v cargo)); --only-binary still forbids a build" >&2
fi
PATH=$clean_path python3 -m venv "$work/venv"
# The serve extra (APScheduler) comes from the package index, as wheels too.
PATH=$clean_path "$work/venv/bin/pip" install -q --only-binary :all: "$wheel[serve]"

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

# serve from the wheel: a job every second runs, and SIGTERM stops serve with exit status 0.
mkdir "$work/jobs"
printf '%s\n' '{"name": "tick", "command": "echo tick", "schedule": "@every 1s"}' > "$work/jobs/tick.json"
PATH=$clean_path "$work/venv/bin/dkron-exec" serve "$work/jobs" --store "$work/serve.db" \
    > "$work/serve.txt" 2>&1 &
serve_pid=$!
runs=0
deadline=$((SECONDS + 120))  # two runs take two seconds; the bound is for a loaded machine
while [ "$SECONDS" -lt "$deadline" ]; do
    runs=$(PATH=$clean_path "$work/venv/bin/dkron-exec" executions tick --store "$work/serve.db" --json |
        "$work/venv/bin/python" -c 'import json, sys; print(len(json.load(sys.stdin)))')
    [ "$runs" -ge 2 ] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.2
done
[ "$runs" -ge 2 ] || { cat "$work/serve.txt"; echo "serve from the wheel ran tick $runs time(s) in 120 s" >&2; exit 1; }
kill -TERM "$serve_pid"
status=0
wait "$serve_pid" || status=$?
serve_pid=
[ "$status" -eq 0 ] || { cat "$work/serve.txt"; echo "serve exited $status on SIGTERM, not 0" >&2; exit 1; }
PATH=$clean_path "$work/venv/bin/dkron-exec" executions tick --store "$work/serve.db" --json > "$work/tick.json"
"$work/venv/bin/python" -c '
import json, sys
runs = json.load(open(sys.argv[1]))
assert runs and all(r["success"] and r["output"] == "tick\n" for r in runs), runs
' "$work/tick.json" || { cat "$work/serve.txt"; echo "tick did not run as it should from serve" >&2; exit 1; }
echo "serve ran tick $runs+ times from the installed wheel and stopped on SIGTERM with exit status 0"
