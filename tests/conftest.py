"""Test configuration: make ``tests/`` importable (layer_db, layer_rows) and keep runs
deterministic and quiet.

``NEOCAFFE_TEST_DEVICE=cuda python -m pytest tests/test_layers.py ...`` runs the tests in GPU
mode (``caffe.set_mode_gpu()`` before each test); tests that only make sense on the CPU are
marked ``cpu_only`` and skipped there. The default is the CPU."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("GLOG_minloglevel", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

import caffe  # noqa: E402

# Tiny tensors: intra-op threads only add overhead (and contention on a 2-core CI machine).
torch.set_num_threads(1)


DEVICE = os.environ.get("NEOCAFFE_TEST_DEVICE", "cpu")


def pytest_collection_modifyitems(config, items):
    if DEVICE != "cpu":
        skip = pytest.mark.skip(reason=f"CPU-only test (NEOCAFFE_TEST_DEVICE={DEVICE})")
        for item in items:
            if "cpu_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _mode_and_seed():
    if DEVICE == "cuda":
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    caffe.set_random_seed(1701)
    yield


@pytest.fixture(autouse=True)
def _log_state():
    """Caffe's log as it was before the test: commands under test call init_log, which
    points it at the (captured) stderr of that moment with the test's GLOG_minloglevel."""
    from caffe._common import LOG

    handlers, level = list(LOG.handlers), LOG.level
    yield
    for h in list(LOG.handlers):
        LOG.removeHandler(h)
    for h in handlers:
        LOG.addHandler(h)
    LOG.setLevel(level)
