"""Test configuration: make ``tests/`` importable (layer_db, layer_rows) and keep runs
deterministic and quiet."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("GLOG_minloglevel", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

import caffe  # noqa: E402

# Tiny tensors: intra-op threads only add overhead (and contention on a 2-core CI machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _cpu_mode_and_seed():
    caffe.set_mode_cpu()
    caffe.set_random_seed(1701)
    yield
