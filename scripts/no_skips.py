"""Fails when a pytest run skipped anything: command 2 promises every test runs on a machine it set up.

    python scripts/no_skips.py build/junit-tests.xml [build/junit-benches.xml ...]

Reads the JUnit XML files pytest wrote (``--junitxml``), which record skips at collection too (a
module-level ``importorskip``), and lists each skipped test with its reason.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def skipped(path: str) -> list[str]:
    found = []
    for case in ET.parse(path).iter("testcase"):
        for skip in case.iter("skipped"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            why = skip.get("message", "")
            if why == "collection skipped":  # a module skipped at import: its reason is the text
                why = (skip.text or "").strip()
            found.append(f"{name}: {why}")
    return found


def main(paths: list[str]) -> int:
    found = [line for path in paths for line in skipped(path)]
    for line in found:
        print(f"SKIPPED {line}", file=sys.stderr)
    if found:
        print(f"{len(found)} test(s) skipped: command 2 runs every test (see above for why each was skipped)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
