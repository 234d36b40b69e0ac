#!/usr/bin/env bash
# The README's Celery walk-through on one machine: redis-server on a free loopback port, two workers
# standing for two nodes (tags role=web and role=db) sharing one SQLite store, a job dispatched to the
# role=db node, and its execution read back from the store. Everything lives in a temporary folder and
# is stopped at the end (the trap), however the script ends. From the repository's root, with the venv
# of command 1 and Celery's Redis client in it:
#     .venv/bin/pip install 'celery[redis]>=5.3,<6' && bash examples/celery-walkthrough.sh
set -euo pipefail
venv=${VENV:-$PWD/.venv}
demo=$(mktemp -d)
stop() {
    kill $(jobs -p) 2>/dev/null || true   # redis-server and the two workers
    wait || true
    rm -rf "$demo"
}
trap stop EXIT
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --dir "$demo" >"$demo/redis.log" &

cat >"$demo/jobsapp.py" <<PY
from celery import Celery

from dkron_exec.integrations.celery import install

app = Celery("jobsapp", broker="redis://127.0.0.1:$port/0", backend="redis://127.0.0.1:$port/1")
app.conf.dkron_exec_store = "$demo/shared.db"  # across machines: a postgresql:// URL
install(app)
PY
cd "$demo"
"$venv/bin/celery" -A jobsapp worker -n web1@%h -c 1 -l warning -Q "$("$venv/bin/dkron-exec" celery-queues --tag role=web)" &
"$venv/bin/celery" -A jobsapp worker -n db1@%h -c 1 -l warning -Q "$("$venv/bin/dkron-exec" celery-queues --tag role=db)" &
"$venv/bin/python" -c 'from jobsapp import app; from dkron_exec.integrations.celery import dispatch
print(dispatch(app, {"name": "hello", "command": "echo hi", "tags": {"role": "db"}}).get(timeout=60))'
"$venv/bin/dkron-exec" executions hello --store "$demo/shared.db"   # run by db1@...
