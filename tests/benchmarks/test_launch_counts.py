"""Kernel launches per pass (benchmarks/launch_counts.py): neocaffe's LeNet and CIFAR-10 passes
launch as many kernels as their PyTorch twins (what a launch-bound GPU pass costs), and the
counter leaves out views and counts host reads apart."""

import pytest
import torch

from benchmarks import launch_counts, suite


@pytest.mark.parametrize("net", ["lenet", "cifar10_quick"])
def test_forward_launches_what_the_twin_launches(net):
    row = launch_counts.count_case(suite.Case(net, 2, "forward"), suite.Device("cpu"))
    assert row["ours"] == row["twin"], row["differing"]
    assert row["host_reads"] == 0


def test_a_solver_step_launches_no_more_than_the_twin():
    row = launch_counts.count_case(suite.Case("lenet", 2, "solver"), suite.Device("cpu"))
    assert row["ours"] <= row["twin"], row["differing"]


def test_views_are_not_kernels_and_reads_are_counted_apart():
    x = torch.ones(4, 3)
    with launch_counts.KernelCounter() as counter:
        y = x.view(3, 4).t() + 1
        float(y.sum())
    assert counter.kernels == {"add": 1, "sum": 1}
    assert counter.reads == 1
