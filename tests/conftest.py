"""Test configuration: make ``tests/`` importable (layer_db, layer_rows) and keep runs
deterministic and quiet."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("GLOG_minloglevel", "2")

import pytest  # noqa: E402

import caffe  # noqa: E402


@pytest.fixture(autouse=True)
def _cpu_mode_and_seed():
    caffe.set_mode_cpu()
    caffe.set_random_seed(1701)
    yield
