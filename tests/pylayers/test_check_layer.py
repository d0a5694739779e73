"""The gradient checker API and the ``caffe check-layer`` command catch a wrong backward."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import caffe
from caffe.errors import GradientCheckError
from caffe.proto import caffe_pb2
from caffe.testing import GradientChecker, make_blobs

LAYERS = textwrap.dedent('''
    import caffe


    class Square(caffe.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data ** 2

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = 2 * bottom[0].data * top[0].diff


    class WrongSquare(Square):
        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = bottom[0].data * top[0].diff  # forgot the 2


    class TopAsBlob(Square):
        def forward(self, bottom, top):
            top.data[...] = bottom[0].data


    class TorchProduct(caffe.Layer):
        """y = x0 * x1 * w with torch ops and a learned w; autograd gives the backward."""

        def setup(self, bottom, top):
            self.blobs.add_blob(1)
            self.blobs[0].data[...] = 1.5

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].tensor[...] = bottom[0].tensor * bottom[1].tensor * self.blobs[0].tensor


    class IgnoresPropagateDown(caffe.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data * bottom[1].data

        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = bottom[1].data * top[0].diff
            bottom[1].diff[...] = bottom[0].data * top[0].diff


    class CountsCalls(Square):
        """y = x + (the number of forwards so far): a state finite differences cannot see."""

        def setup(self, bottom, top):
            self.calls = 0

        def forward(self, bottom, top):
            self.calls += 1
            top[0].data[...] = bottom[0].data + self.calls


    class OneShot(Square):
        """A forward that refuses to run twice."""

        def forward(self, bottom, top):
            if getattr(self, "ran", False):
                raise RuntimeError("already ran")
            self.ran = True
            super().forward(bottom, top)

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = top[0].diff
''')


@pytest.fixture
def module(tmp_path, monkeypatch):
    (tmp_path / "checked_layers.py").write_text(LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("checked_layers", None)


def _layer(name):
    import checked_layers

    return getattr(checked_layers, name)(caffe_pb2.LayerParameter(name="sq", type="Python"))


def test_api_passes_a_right_backward_and_catches_a_wrong_one(module):
    x = np.random.default_rng(0).standard_normal((2, 3))
    GradientChecker().check_gradient(_layer("Square"), make_blobs(x),
                                     [caffe.Blob(dtype=torch.float64)])
    with pytest.raises(GradientCheckError, match=r"'sq'.*bottom 0 element \d+.*by backward\(\)"
                                                 r".*by finite differences"):
        GradientChecker().check_gradient(_layer("WrongSquare"), make_blobs(x),
                                         [caffe.Blob(dtype=torch.float64)])
    GradientChecker().check_gradient_eltwise(_layer("Square"), make_blobs(x),
                                             [caffe.Blob(dtype=torch.float64)])
    with pytest.raises(GradientCheckError):
        GradientChecker().check_gradient_exhaustive(_layer("WrongSquare"), make_blobs(x),
                                                    [caffe.Blob(dtype=torch.float64)])


def test_builtin_layers_work_with_the_checker():
    lp = caffe_pb2.LayerParameter(name="relu", type="ReLU")
    from caffe.net import create_layer

    layer = create_layer(lp, caffe.TRAIN)
    x = np.random.default_rng(1).standard_normal((3, 4))
    GradientChecker(1e-3, 1e-3, kink=0.0, kink_range=1e-2).check_gradient_eltwise(
        layer, make_blobs(x), [caffe.Blob(dtype=torch.float64)])


def _cli(module_dir, layer, *bottoms):
    cmd = [sys.executable, "-m", "caffe", "check-layer", "--layer",
           f'type: "Python" python_param {{ module: "checked_layers" layer: "{layer}" }}',
           "--python-path", str(module_dir)]
    for b in bottoms:
        cmd += ["--bottom", b]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_command_reports_pass_and_fail(module):
    good = _cli(module, "Square", "2,3")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "4 passed, 0 failed" in good.stdout
    bad = _cli(module, "WrongSquare", "2,3")
    assert bad.returncode == 1
    assert "FAIL  gradient" in bad.stdout and "finite differences" in bad.stdout


def test_command_passes_a_layer_whose_backward_is_autograds(module):
    res = _cli(module, "TorchProduct", "2,3", "2,3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 passed, 0 failed" in res.stdout


def test_command_catches_ignored_propagate_down(module):
    res = _cli(module, "IgnoresPropagateDown", "2,3", "2,3")
    assert res.returncode == 1
    assert "FAIL  propagate_down" in res.stdout


def test_checker_failures_carry_the_nets_hint_and_the_line(module):
    from caffe.testing import BottomSpec, check_layer

    report = check_layer('type: "Python" python_param { module: "checked_layers" '
                         'layer: "TopAsBlob" }', [BottomSpec((2, 3))])
    text = "\n".join(report.lines)
    assert "bottom and top are lists of blobs" in text
    assert "checked_layers.py:" in text and "in forward]" in text


def test_checker_refuses_a_forward_that_keeps_state(module):
    from caffe.testing import BottomSpec, check_layer

    report = check_layer('type: "Python" python_param { module: "checked_layers" '
                         'layer: "CountsCalls" }', [BottomSpec((2, 3))])
    text = "\n".join(report.lines)
    assert "FAIL  gradient: not checked: a second forward of the same bottoms changed top 0" \
        in text
    assert report.failures == 1  # reshape and propagate_down still pass
    # with nothing to gradient-check (labels only), a changing forward is no failure
    report = check_layer('type: "Python" python_param { module: "checked_layers" '
                         'layer: "CountsCalls" }', [BottomSpec((2, 3), "int:4")])
    assert report.failures == 0 and "backward: nothing to check" in str(report)
    report = check_layer('type: "Python" python_param { module: "checked_layers" '
                         'layer: "OneShot" }', [BottomSpec((2, 3))])
    assert "FAIL  gradient check raised RuntimeError: already ran" in str(report)


LSTM = ('type: "LSTM" recurrent_param { num_output: 3 weight_filler { type: "uniform" '
        'min: -0.3 max: 0.3 } bias_filler { type: "uniform" min: -0.3 max: 0.3 } }')


@pytest.mark.parametrize("text, bottoms, notes", [
    # time-major: the batch is axis 1 (axis 0, T, is fixed at setup); x's diff is written
    # whatever propagate_down says, as in Caffe, so that is a note
    (LSTM, ["4,2,3", "4,2:int:1"], 1),
    ('type: "LSTMUnit"', ["1,2,3", "1,2,12", "1,2:int:2"], 1),  # 2 tops by default
    ('type: "Scale" scale_param { axis: 0 }', ["2,3,4", "2,3"], 1),  # Caffe's scratch diff
    ('type: "Scale"', ["2,3,4", "3"], 1),  # the operand (3,) has no batch axis
    ('type: "Bias"', ["2,3,4", "3,4"], 0),
    ('type: "InfogainLoss"', ["4,5:positive", "4:int:5", "5,5:int:3"], 0),  # H is 5 x 5
    # the targets take no gradient (Caffe's loss layers refuse force_backward there)
    ('type: "SigmoidCrossEntropyLoss"', ["4,3", "4,3:positive"], 0),
])
def test_checker_passes_builtin_types_that_follow_caffe(text, bottoms, notes):
    from caffe.testing import BottomSpec, check_layer

    report = check_layer(text, [BottomSpec.parse(b) for b in bottoms])
    out = str(report)
    assert report.failures == 0, out
    assert out.count("NOTE  ") == notes, out
    assert out.endswith(f"{4 - notes} passed, 0 failed"), out


def test_checker_explains_a_carried_recurrent_state_and_non_finite_tops():
    from caffe.testing import BottomSpec, check_layer

    # cont 1 at t = 0 for some streams: the LSTM continues from the previous forward
    report = check_layer(LSTM, [BottomSpec((4, 2, 3)), BottomSpec((4, 2), "int:2")])
    assert "give cont 0 there" in str(report)
    report = check_layer('type: "Log"', [BottomSpec((2, 3))])  # log of negative numbers
    assert "not all finite" in str(report)


def test_command_exempts_a_fixed_bottom_from_the_gradient():
    """InfogainLoss refuses a gradient for its matrix H (as Caffe): --no-gradient says so for a
    bottom whose fill is not int:N."""
    cmd = [sys.executable, "-m", "caffe", "check-layer", "--layer", 'type: "InfogainLoss"',
           "--bottom", "4,5:positive", "--bottom", "4:int:5", "--bottom", "5,5:positive"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1 and "cannot backpropagate to its infogain matrix" \
        in refused.stdout
    exempt = subprocess.run(cmd + ["--no-gradient", "2"], capture_output=True, text=True,
                            timeout=600)
    assert exempt.returncode == 0, exempt.stdout + exempt.stderr
    assert "4 passed, 0 failed" in exempt.stdout


@pytest.mark.parametrize("args, says", [
    (["--layer", 'type: "ReLU"', "--bottom", "2,3:int:0"], "int:N needs a positive integer N"),
    (["--layer", 'type: "ReLU"', "--bottom", "2,-3"], "non-negative integers"),
    (["--layer", "type: ReLU", "--bottom", "2,3"], "not LayerParameter prototxt"),
    (["--layer-file", "/no/such/layer.prototxt", "--bottom", "2,3"], "cannot read the layer file"),
])
def test_command_reports_bad_arguments_without_a_traceback(args, says):
    res = subprocess.run([sys.executable, "-m", "caffe", "check-layer", *args],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    assert says in res.stderr and "Traceback" not in res.stderr, res.stderr
