"""The README opens with exactly two commands, and .ci/run runs the second (the tests)."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.findall(r"```\n(.*?)\n```", text, re.S)


def test_readme_starts_with_two_commands():
    commands = _commands()
    assert len(commands) >= 2
    train, tests = commands[0], commands[1]
    assert "\n" not in train and "\n" not in tests
    assert "torch==2.13.0" in train and "caffe train -solver" in train
    assert "torch==2.13.0" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert _commands()[1] in ci


def test_main_job_files_exist():
    solver = re.search(r"-solver (\S+)", _commands()[0]).group(1)
    assert os.path.exists(os.path.join(ROOT, solver))
