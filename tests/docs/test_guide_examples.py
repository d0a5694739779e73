"""Every example of docs/python_layers.md runs and passes its own assertions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "docs", "examples")
SCRIPTS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))


def test_guide_links_every_example():
    guide = open(os.path.join(ROOT, "docs", "python_layers.md")).read()
    missing = [s for s in SCRIPTS if f"examples/{s}" not in guide]
    assert not missing, f"examples not referenced in docs/python_layers.md: {missing}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script):
    res = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
