"""The Celery app the tests' workers and beat run (``celery -A celery_app``): broker, result
backend, store and job folder come from the environment the test sets."""

from __future__ import annotations

import os

from celery import Celery

from dkron_exec.integrations.celery import beat_schedule, install, load_job_folder

app = Celery("dkron_exec_tests", broker=os.environ["TEST_BROKER_URL"], backend=os.environ["TEST_BACKEND_URL"])
app.conf.dkron_exec_store = os.environ["TEST_DKRON_STORE"]
app.conf.dkron_exec_executor_options = {"retry_backoff": 0.01}
app.conf.broker_connection_retry_on_startup = True
install(app)

if os.environ.get("TEST_BEAT_JOBS"):
    app.conf.beat_schedule = beat_schedule(load_job_folder(os.environ["TEST_BEAT_JOBS"]))
