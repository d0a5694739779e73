"""Every example of the guides (docs/*.md) is linked from one of them, runs, and passes its own
assertions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "docs", "examples")
SCRIPTS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))


def test_guide_links_every_example():
    docs = os.path.join(ROOT, "docs")
    guides = "".join(open(os.path.join(docs, f)).read() for f in os.listdir(docs)
                     if f.endswith(".md"))
    missing = [s for s in SCRIPTS if f"examples/{s}" not in guides]
    assert not missing, f"examples not referenced in any docs/*.md guide: {missing}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script):
    res = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
