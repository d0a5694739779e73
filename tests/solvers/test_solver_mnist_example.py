"""The MNIST example: its Python data layer, a short training run, classify.py, and (marked
slow) the full ``caffe train`` run that must reach 97 % on the held-out images."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import caffe
from caffe.errors import PythonLayerError
from caffe.proto import caffe_pb2, files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "mnist")


@pytest.fixture
def example_path(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLE)
    monkeypatch.chdir(ROOT)


def short_solver(tmp_path, iterations: int = 30) -> caffe_pb2.SolverParameter:
    p = files.read_text(os.path.join(EXAMPLE, "lenet_solver.prototxt"),
                        caffe_pb2.SolverParameter())
    p.max_iter = iterations
    p.test_interval = iterations
    p.test_iter[0] = 2
    p.snapshot = 0
    p.snapshot_prefix = str(tmp_path / "lenet")
    return p


def test_data_layer_splits_and_batches(example_path):
    import mnist_data_layer

    train_x, train_y = mnist_data_layer.load_mnist("train")
    test_x, test_y = mnist_data_layer.load_mnist("test")
    assert train_x.shape == (8000, 1, 28, 28) and test_x.shape == (2000, 1, 28, 28)
    assert train_x.dtype == np.float32 and 0 <= train_x.min() and train_x.max() < 1
    assert set(np.unique(test_y)) == set(range(10))
    net = caffe.Net(data_net("{'split': 'test', 'batch_size': 900}"), caffe.TEST)
    assert net.blobs["data"].shape == (900, 1, 28, 28)
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, test_y[:900])
    net.forward()
    net.forward()  # the third batch wraps around: images 1800..1999 then 0..699
    np.testing.assert_array_equal(net.blobs["data"].data[:200], test_x[1800:])
    np.testing.assert_array_equal(net.blobs["data"].data[200:], test_x[:700])


def data_net(param_str: str) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="mnist", type="Python", top=["data", "label"])
    layer.python_param.module = "mnist_data_layer"
    layer.python_param.layer = "MnistDataLayer"
    layer.python_param.param_str = param_str
    return net


@pytest.mark.parametrize("param_str, message", [
    ("{'split': 'val', 'batch_size': 4}", "'train' or 'test'"),
    ("{'split': 'train'}", "positive integer 'batch_size'"),
    ("{'split': 'train', 'batch_size': 4, 'shuffle': 1}", "unknown param_str keys"),
    ("__import__('os').system('true')", "dict literal"),
    ("[1, 2]", "dict literal"),
])
def test_data_layer_rejects_bad_param_str(example_path, param_str, message):
    with pytest.raises(PythonLayerError, match=message):
        caffe.Net(data_net(param_str), caffe.TRAIN)


def test_short_training_run_learns_and_classify_uses_the_snapshot(example_path, tmp_path):
    solver = caffe.get_solver(short_solver(tmp_path))
    assert isinstance(solver, caffe.SGDSolver) and solver.param.lr_policy == "inv"
    solver.solve()
    assert solver.iter == 30
    accuracy, loss = solver.mean_scores[0]
    assert accuracy > 0.5 and loss < 2.0
    weights = str(tmp_path / "lenet_iter_30.caffemodel")
    assert solver.snapshots == [weights]
    result = subprocess.run([sys.executable, os.path.join(EXAMPLE, "classify.py"), "--weights",
                             weights, "--count", "8"], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, GLOG_minloglevel="2"))
    assert result.returncode == 0, result.stderr
    assert "held-out image    7: predicted" in result.stdout
    assert re.search(r"\d of 8 correct", result.stdout)


@pytest.mark.slow
def test_documented_command_reaches_97_percent():
    """``caffe train -solver examples/mnist/lenet_solver.prototxt`` from the repository root,
    as the README says (writes examples/mnist/snapshots/, which git ignores)."""
    result = subprocess.run([sys.executable, "-m", "caffe", "train", "-solver",
                             "examples/mnist/lenet_solver.prototxt"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, GLOG_minloglevel="0"))
    assert result.returncode == 0, result.stderr[-3000:]
    accuracies = re.findall(r"Test net output #0: accuracy = ([\d.]+)", result.stderr)
    assert float(accuracies[-1]) >= 0.97, accuracies
    latest = re.search(r"latest weights: (\S+)", result.stdout).group(1)
    assert os.path.isfile(os.path.join(ROOT, latest))
    assert latest.startswith("examples/mnist/snapshots/")
