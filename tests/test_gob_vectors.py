"""The gob vectors the Rust codec is tested against (rust/core/tests/goplugin_wire.rs) are exactly
what Go's encoding/gob writes for Dkron v4.0.5's types today: tests/go/cmd/gobvectors makes them
again from the repository alone, and this test compares byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import go_plugins

pytestmark = go_plugins.skip_without_go()

VECTORS = Path(__file__).resolve().parent.parent / "rust" / "core" / "tests" / "data" / "goplugin"


def test_the_committed_vectors_are_what_go_writes(tmp_path: Path) -> None:
    subprocess.run([str(go_plugins.build()["gobvectors"]), str(tmp_path)], check=True)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in VECTORS.glob("*.hex"))
    for name in written:
        assert (tmp_path / name).read_text() == (VECTORS / name).read_text(), name
