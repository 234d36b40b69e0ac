#!/usr/bin/env bash
# The long fuzzing runs, outside CI (docs/FUZZING.md): FUZZ_CASES inputs (default 1,000,000) for
# each of the Rust job-plan parser, the plugin frame decoders and the Python job parser (a plain
# random-mutation harness), then the hypothesis tests with their long profile. Prints inputs,
# time and failures of each; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${FUZZ_CASES:-1000000}"
python="${PYTHON:-.venv/bin/python}"

echo "== Rust: JobPlan::parse and the frame decoders, $cases inputs each (release build)"
(cd rust && FUZZ_CASES="$cases" cargo test --release -q -p dkron-exec-core \
    --test fuzz_plan --test fuzz_frames -- --nocapture)

echo "== Python: Job.from_dict / from_json, $cases mutated documents"
"$python" scripts/fuzz_job_documents.py "$cases"

echo "== Python: hypothesis, profile long"
start=$(date +%s)
HYPOTHESIS_PROFILE=long "$python" -m pytest tests/test_job_fuzz.py -q -p no:cacheprovider
echo "hypothesis long: $(( $(date +%s) - start ))s"
