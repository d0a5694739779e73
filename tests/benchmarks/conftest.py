"""The benchmark tests import the ``benchmarks`` package from the repository root, and the
suite sets torch's thread count: each test gets the others' back."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _keep_thread_count():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
