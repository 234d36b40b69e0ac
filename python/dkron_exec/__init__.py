"""dkron_exec: run jobs and process their executions the way Dkron does, inside any Python program.

>>> from dkron_exec import Executor
>>> with Executor(":memory:") as ex:
...     execution = ex.run({"name": "hello", "command": "echo hello"})
>>> execution.success, execution.output
(True, b'hello\\n')
"""

from ._core import __version__
from .containment import Isolation, isolation
from .discovery import discover_plugins
from .errors import (
    ConcurrencyError,
    DkronExecError,
    ExecutorClosedError,
    JobError,
    PluginError,
    StoreError,
)
from .execution import Execution
from .executor import Executor
from .job import Job, ShellConfig
from .store import SQLiteStore, Store, default_store_path

__all__ = [
    "ConcurrencyError",
    "DkronExecError",
    "Execution",
    "Executor",
    "ExecutorClosedError",
    "Isolation",
    "Job",
    "JobError",
    "PluginError",
    "SQLiteStore",
    "ShellConfig",
    "Store",
    "StoreError",
    "__version__",
    "default_store_path",
    "discover_plugins",
    "isolation",
]
