"""``dkron-exec serve JOBS_DIR``: a folder of Dkron job files run as a service.

Every ``*.json`` file of the folder is a job document. Jobs are scheduled by APScheduler's
``BackgroundScheduler`` through :mod:`dkron_exec.integrations.apscheduler` (so fire times are
Dkron's) and run by one :class:`~dkron_exec.Executor`.

**Changes.** The folder is polled (one ``stat`` per file, every ``poll`` seconds): polling needs no
extra dependency, works on every file system (network mounts, bind mounts into containers, where
inotify events may never come) and costs little for the tens or hundreds of files a node holds. A
file whose size, modification time or inode changed is read again: a new or changed job is
(re)scheduled, a removed file's job is unscheduled. A file that does not hold a valid job -- or
names an executor or processor that is neither a built-in nor a plugin the Executor found -- logs
one line (ERROR) naming the file, the field and the value (a file that is not JSON: ``validate``'s
report, with the offending line only when the file is a JSON object's text; nothing of any other
file is quoted), and the job keeps its previous version (or is not loaded, if it had none); it is
read again when it changes. Write files atomically (write another name, then rename) so that a
half-written file is never seen.

**Stop.** SIGTERM or SIGINT stops scheduling; runs in flight may finish for up to ``grace`` seconds,
then the Executor is closed, which kills what is left (whole process trees) and stores those runs
as failed. A second signal ends the grace period at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import DkronExecError
from .execution import Execution
from .executor import Executor
from .integrations.apscheduler import SkipRun, add_dkron_job, why_unscheduled
from .job import Job
from .job_file import BadDocument, load_job
from .next_run import why_never
from .serve_cli import DEFAULT_GRACE, DEFAULT_MAX_RUNNING, DEFAULT_POLL

log = logging.getLogger("dkron_exec.serve")


@dataclass(frozen=True)
class _Seen:
    """What a file looked like when it was last read, and the job it gives (None: none valid yet)."""

    signature: tuple[int, int, int]
    data: bytes
    job: Job | None
    clash: bool = False
    """Its latest version named a job another file holds: read it again when a job goes away."""


@dataclass
class Changes:
    loaded: list[tuple[Path, Job]]
    """New or changed jobs, with their file."""
    removed: list[tuple[Path, str]]
    """Jobs whose file is gone (or now names another job), with that file."""


_UNREAD = (-1, -1, -1)  # a signature no file has


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class JobFolder:
    """The job files of a folder, and the valid job each holds; :meth:`scan` reports changes.
    ``check`` (such as ``Executor.check``) may refuse a job with a JobError, as an invalid file."""

    def __init__(self, path: Path, check: Callable[[Job], object] | None = None) -> None:
        self.path = path
        self._check = check
        self._seen: dict[Path, _Seen] = {}

    def jobs(self) -> dict[str, Path]:
        """The loaded jobs' names and their files."""
        return {seen.job.name: path for path, seen in self._seen.items() if seen.job is not None}

    def scan(self) -> Changes:
        changes = Changes([], [])
        present: dict[Path, os.stat_result] = {}
        try:
            entries = sorted(self.path.glob("*.json"))
        except OSError as exc:
            log.error("cannot list %s: %s; keeping the jobs as they are", self.path, exc)
            return changes
        for file in entries:
            try:
                st = file.stat()
            except OSError:
                continue  # removed meanwhile: handled as removed below
            if file.is_file():
                present[file] = st
        for file in sorted(set(self._seen) - set(present)):
            gone = self._seen.pop(file)
            if gone.job is not None:
                changes.removed.append((file, gone.job.name))
        for file, st in present.items():
            seen = self._seen.get(file)
            if seen is not None and seen.signature == _signature(st):
                continue
            self._read(file, seen, changes)
        if changes.removed:
            # A file refused for naming a job another file held may be valid now: read it again
            # on the next scan.
            for file, seen in self._seen.items():
                if seen.clash:
                    self._seen[file] = _Seen(_UNREAD, b"", seen.job)
        return changes

    def _read(self, file: Path, seen: _Seen | None, changes: Changes) -> None:
        try:
            with open(file, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except OSError as exc:
            log.error("%s: cannot read it: %s; %s", file, exc.strerror or exc, _keeping(seen))
            return
        signature = _signature(st)
        if seen is not None and seen.data == data:
            self._seen[file] = _Seen(signature, data, seen.job)  # touched, not changed
            return
        previous = seen.job if seen is not None else None
        clash = False
        try:
            job = load_job(str(file), data)
            owner = self.jobs().get(job.name)
            if owner is not None and owner != file:
                clash = True
                raise DkronExecError(f"name: job {job.name!r} is already defined by {owner}")
            if self._check is not None:
                self._check(job)  # names that do not resolve: refused before it is scheduled
        except BadDocument as exc:
            # The report `validate` prints (it names the file), then what serve does about it.
            excerpt = f"\n{exc.excerpt}" if exc.excerpt else ""
            log.error("%s; %s%s", exc.location, _keeping(seen), excerpt)
            self._seen[file] = _Seen(signature, data, previous, clash)
            return
        except DkronExecError as exc:
            log.error("%s: invalid job, %s; %s", file, exc, _keeping(seen))
            # Remember the bad bytes (not to log them every poll) but keep serving the old job.
            self._seen[file] = _Seen(signature, data, previous, clash)
            return
        self._seen[file] = _Seen(signature, data, job)
        if previous is not None and previous.name != job.name:
            changes.removed.append((file, previous.name))
        changes.loaded.append((file, job))


def _keeping(seen: _Seen | None) -> str:
    if seen is not None and seen.job is not None:
        return f"job {seen.job.name!r} keeps its previous version"
    return "no job loaded from it"


class Service:
    """Schedules the jobs of a :class:`JobFolder` and runs each fire through the Executor.

    It is the runner the scheduler's fires call: a fire runs only if its job is still the current
    version and the service is not stopping, and runs in flight are counted for the grace period.
    """

    def __init__(self, folder: JobFolder, executor: Executor, scheduler: Any) -> None:
        self.folder = folder
        self.executor = executor
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self._current: dict[str, Job] = {}
        self._in_flight = 0
        self._stopping = False

    # -- the runner the fires call ----------------------------------------------------------

    def run(self, job: Job) -> Execution:
        with self._lock:
            if self._stopping:
                raise SkipRun("the service is stopping")
            if self._current.get(job.name) is not job:
                raise SkipRun("this version of the job was changed or removed")
            self._in_flight += 1
        try:
            return self.executor.run(job)
        finally:
            with self._lock:
                self._in_flight -= 1

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    # -- keeping up with the folder ---------------------------------------------------------

    def reload(self) -> None:
        changes = self.folder.scan()
        for file, name in changes.removed:
            with self._lock:
                self._current.pop(name, None)
            if self.scheduler.get_job(name) is not None:
                self.scheduler.remove_job(name)
            log.info("job %s removed (%s)", name, file)
        for file, job in changes.loaded:
            with self._lock:
                replaced = self._current.get(job.name) is not None
                self._current[job.name] = job
            aps_job = add_dkron_job(self.scheduler, self, job)
            verb = "reloaded" if replaced else "loaded"
            if aps_job is not None:
                log.info("job %s %s from %s: schedule %r", job.name, verb, file, job.schedule)
            else:
                log.info("job %s %s from %s: not scheduled (%s)", job.name, verb, file, _why(job))

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, grace: float, hurry: Callable[[], bool]) -> None:
        """Stops scheduling, lets runs in flight finish for up to ``grace`` seconds (or until
        ``hurry()`` is true), then closes the Executor, which kills and stores what is left."""
        with self._lock:
            self._stopping = True
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + grace
        running = self.in_flight()
        if running:
            log.info("stopping: waiting up to %gs for %d running job(s) to finish", grace, running)
        while self.in_flight() and time.monotonic() < deadline and not hurry():
            time.sleep(0.05)
        left = self.in_flight()
        if left:
            log.warning("stopping: killing %d job(s) still running", left)
        self.executor.close()
        # The killed runs return once their executions are stored.
        deadline = time.monotonic() + 10
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)


def _why(job: Job) -> str:
    return why_unscheduled(job) or why_never(job, datetime.now(timezone.utc)) or "no run left in its schedule"


def make_scheduler(max_running: int = DEFAULT_MAX_RUNNING) -> Any:
    """A BackgroundScheduler whose thread pool holds ``max_running`` runs at once."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(executors={"default": ThreadPoolExecutor(max_workers=max_running)})


class StopRequest:
    """Set by signal handlers: plain flags, since a handler must not take a lock that the
    interrupted main thread may hold (``threading.Event.set`` does)."""

    def __init__(self) -> None:
        self.stop = False
        self.hurry = False
        self.signum: int | None = None
        """The signal that asked to stop first, if a signal did."""

    def signal(self, signum: int | None = None) -> None:
        """The first call asks to stop; a second one to stop without waiting out the grace period."""
        if self.stop:
            self.hurry = True
        elif signum is not None:
            self.signum = signum
        self.stop = True

    def reason(self) -> str:
        if self.signum is None:
            return "asked to stop"
        try:
            return f"received {signal.Signals(self.signum).name}"
        except ValueError:
            return f"received signal {self.signum}"


_TICK = 0.05  # how soon a stop request is noticed


def serve(
    jobs_dir: Path,
    executor: Executor,
    request: StopRequest,
    *,
    grace: float = DEFAULT_GRACE,
    poll: float = DEFAULT_POLL,
    max_running: int = DEFAULT_MAX_RUNNING,
) -> None:
    """Serves the folder until ``request.stop``, then stops (see :meth:`Service.stop`)."""
    service = Service(JobFolder(jobs_dir, executor.check), executor, make_scheduler(max_running))
    service.reload()
    service.scheduler.start()
    loaded = len(service.folder.jobs())
    scheduled = len(service.scheduler.get_jobs())
    log.info(
        "serving %d scheduled job(s), %d not scheduled, from %s (polled every %gs, grace %gs)",
        scheduled,
        loaded - scheduled,
        jobs_dir,
        poll,
        grace,
    )
    next_look = time.monotonic() + poll
    while not request.stop:
        time.sleep(_TICK)
        if time.monotonic() >= next_look:
            service.reload()
            next_look = time.monotonic() + poll
    log.info("stopping (%s): no new runs start", request.reason())
    service.stop(grace, lambda: request.hurry)
    log.info("stopped")
