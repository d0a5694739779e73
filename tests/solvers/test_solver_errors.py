"""Bad solver descriptions raise a clear SolverError."""

from __future__ import annotations

import pytest
from solver_nets import REGRESSION_NET, solver_param

import caffe
from caffe.errors import FileFormatError, ProtoError, SolverError


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_missing_net_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "solver.prototxt", 'net: "nope.prototxt" base_lr: 0.1 '
                 'lr_policy: "fixed"')
    with pytest.raises(SolverError, match=r"nope\.prototxt.*does not exist") as info:
        caffe.get_solver(path)
    assert isinstance(info.value, FileFormatError)
    assert "solver.prototxt" in str(info.value)


def test_missing_solver_file_and_syntax_error(tmp_path):
    with pytest.raises(SolverError, match="does not exist"):
        caffe.get_solver(str(tmp_path / "absent.prototxt"))
    path = write(tmp_path, "bad.prototxt", "base_lr: 0.1\nmax_iter: ten\n")
    with pytest.raises(ProtoError, match=r"bad\.prototxt:2"):
        caffe.SGDSolver(path)


@pytest.mark.parametrize("text, message", [
    ("type: 'Adamax'", "unknown solver type 'Adamax'.*SGD.*Adam"),
    ("lr_policy: 'cosine'", "unknown lr_policy 'cosine'.*fixed.*sigmoid"),
    ("lr_policy: 'step' gamma: 0.1", "stepsize > 0"),
    ("lr_policy: 'exp' gamma: -0.5", "gamma >= 0"),
    ("lr_policy: 'poly' power: 1", "max_iter > 0"),
    ("regularization_type: 'L3' weight_decay: 0.1", "regularization_type 'L3'"),
    ("type: 'AdaGrad' momentum: 0.9", "momentum cannot be used with AdaGrad"),
    ("type: 'RMSProp' momentum: 0.9", "momentum cannot be used with RMSProp"),
    ("type: 'RMSProp' rms_decay: 1.5", r"rms_decay must lie in \[0, 1\)"),
    ("average_loss: 0", "average_loss must be >= 1"),
    ("iter_size: 0", "iter_size must be >= 1"),
    ("test_iter: 5", "test_interval > 0"),
    ("test_iter: -1 test_interval: 5", "test_iter must not be negative"),
    ("test_iter: 5 test_interval: 5 test_state { stage: 'a' } test_state { stage: 'b' }",
     "test_state once per test net"),
    ("solver_type: NESTEROV type: 'SGD'", "solver_type.*type"),
    ("snapshot: 10", "snapshot_prefix"),
    ("snapshot: 10 snapshot_prefix: '/proc/no/such/dir/x'", "snapshot"),
])
def test_bad_parameters(text, message):
    with pytest.raises(SolverError, match=message):
        caffe.get_solver(solver_param(text))


def test_regularization_type_matters_only_with_weight_decay():
    caffe.get_solver(solver_param("regularization_type: 'L3'"))  # Caffe checks it once used


def test_test_iter_without_a_test_net(tmp_path):
    net = write(tmp_path, "net.prototxt", REGRESSION_NET)
    path = write(tmp_path, "solver.prototxt",
                 f'train_net: "{net}" test_iter: 10 test_interval: 5 base_lr: 0.1 '
                 'lr_policy: "fixed"')
    with pytest.raises(SolverError, match="test_iter must be given once per test net"):
        caffe.get_solver(path)


def test_train_net_must_be_given_exactly_once(tmp_path):
    net = write(tmp_path, "net.prototxt", REGRESSION_NET)
    with pytest.raises(SolverError, match="exactly one train net.*none"):
        caffe.get_solver(caffe.proto.caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed"))
    p = solver_param()
    p.train_net = net
    with pytest.raises(SolverError, match="exactly one train net"):
        caffe.get_solver(p)


def test_solver_arguments_are_checked():
    with pytest.raises(TypeError, match="solver file path or a caffe_pb2.SolverParameter"):
        caffe.get_solver(42)


def test_test_iter_zero_tests_nothing_as_caffe(caplog, tmp_path, monkeypatch):
    """Caffe accepts test_iter: 0 (HED's solver uses it to build a test net it never runs):
    each test logs its header and no outputs."""
    import logging

    monkeypatch.chdir(tmp_path)
    solver = caffe.get_solver(solver_param(
        "test_iter: 0 test_interval: 2 test_compute_loss: true max_iter: 4 "
        "snapshot_after_train: false"))
    logger = logging.getLogger("caffe")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="caffe"):
            solver.solve()
    finally:
        logger.removeHandler(caplog.handler)
    text = caplog.text
    assert "Iteration 0, Testing net (#0)" in text and "Test loss: nan" in text
    assert "Test net output" not in text and solver.iter == 4


def test_a_train_net_without_a_loss_is_pointed_out(caplog, tmp_path):
    """A Python loss layer without loss_weight: the loss prints, nothing trains (as in Caffe,
    whose own example says so in a comment). The solver says it."""
    import logging

    p = solver_param("max_iter: 1")
    for layer in p.net_param.layer:
        del layer.loss_weight[:]
        if layer.type == "EuclideanLoss":
            layer.type = "Eltwise"
    logger = logging.getLogger("caffe")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="caffe"):
            caffe.get_solver(p)
            caffe.get_solver(solver_param("max_iter: 1"))
    finally:
        logger.removeHandler(caplog.handler)
    assert caplog.text.count("has no loss: no top carries a loss_weight") == 1
