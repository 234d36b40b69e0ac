"""Helpers for the plugin tests: write real plugin executables into a folder."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# A processor plugin body with hooks the tests steer through the job's config.
PROCESSOR = """
import os, sys, time
from dkron_exec.plugin import serve

class P:
    def process(self, args):
        cfg = args.config
        if cfg.get("print"):
            print(cfg["print"])
        if cfg.get("sleep"):
            time.sleep(float(cfg["sleep"]))
        if cfg.get("crash"):
            os._exit(7)
        if cfg.get("raise"):
            raise ValueError(cfg["raise"])
        out = args.execution.output + cfg.get("append", "").encode()
        if cfg.get("pid"):
            out += b"pid=%d\\n" % os.getpid()
        return args.execution.replace(output=out)

serve(processor=P())
"""


def install(folder: Path, kind: str, name: str, code: str, mode: int = 0o755) -> Path:
    """Writes an executable Python plugin ``dkron-KIND-NAME`` running ``code``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dkron-{kind}-{name}"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(code))
    os.chmod(path, mode)
    return path


def install_example(folder: Path, kind: str, name: str, example: str) -> Path:
    source = (EXAMPLES / "plugins" / example).read_text()
    return install(folder, kind, name, source.split("\n", 1)[1])
