"""Loss layers and Accuracy: label range errors, refusal to backpropagate into labels, the
infogain matrix file, and loss_weight scaling of gradients in a Net."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.blob import Blob
from caffe.errors import FileFormatError, LayerSetupError
from caffe.model_io import array_to_blobproto
from caffe.net import create_layer
from caffe.proto import caffe_pb2
from caffe.testing import make_blobs


def _layer(type_name: str, param: str = "", n_bottom: int = 2, n_top: int = 1):
    lp = caffe_pb2.LayerParameter(name="lossy", type=type_name)
    text_format.Merge(param, lp)
    lp.bottom.extend(f"b{i}" for i in range(n_bottom))
    lp.top.extend(f"t{i}" for i in range(n_top))
    return create_layer(lp, caffe.TRAIN)


def _run(layer, *arrays, n_top=1):
    bottom = make_blobs(*arrays, dtype=torch.float32)
    top = [Blob() for _ in range(n_top)]
    layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    return bottom, top


RNG = np.random.default_rng(7)
SCORES = RNG.standard_normal((4, 5))
H = RNG.uniform(0.1, 2.0, size=(1, 1, 5, 5))

LABELLED = [
    ("SoftmaxWithLoss", "", [SCORES]),
    ("MultinomialLogisticLoss", "", [np.full((4, 5), 0.2)]),
    ("HingeLoss", "", [SCORES]),
    ("InfogainLoss", "", [SCORES, None, H]),
    ("Accuracy", "", [SCORES]),
]


def _bottoms(arrays, labels):
    out = [arrays[0], labels] + [a for a in arrays[2:]]
    return [a for a in out if a is not None]


@pytest.mark.parametrize("type_name,param,arrays", LABELLED, ids=[t for t, _, _ in LABELLED])
@pytest.mark.parametrize("bad", [5.0, -1.0])
def test_label_out_of_range_names_layer_label_and_range(type_name, param, arrays, bad):
    labels = np.array([0.0, 1.0, bad, 2.0])
    layer = _layer(type_name, param, n_bottom=len(_bottoms(arrays, labels)))
    with pytest.raises(LayerSetupError,
                       match=rf"'lossy' \({type_name}\).*label {int(bad)} .*\[0, 5\)"):
        _run(layer, *_bottoms(arrays, labels))


@pytest.mark.parametrize("type_name", ["SoftmaxWithLoss", "InfogainLoss", "Accuracy"])
def test_ignored_labels_may_lie_outside_the_range(type_name):
    arrays = [SCORES, np.array([0.0, 255.0, 1.0, 255.0])] + ([H] if type_name == "InfogainLoss"
                                                            else [])
    field = "accuracy_param" if type_name == "Accuracy" else "loss_param"
    layer = _layer(type_name, f"{field} {{ ignore_label: 255 }}", n_bottom=len(arrays))
    _, top = _run(layer, *arrays)
    assert np.isfinite(top[0].data).all()


def test_all_ignored_gives_zero_loss_and_zero_accuracy():
    labels = np.full(4, 3.0)
    _, top = _run(_layer("SoftmaxWithLoss", "loss_param { ignore_label: 3 }"), SCORES, labels)
    assert float(top[0].data) == 0.0
    _, top = _run(_layer("Accuracy", "accuracy_param { ignore_label: 3 }", n_top=2), SCORES,
                  labels, n_top=2)
    assert float(top[0].data) == 0.0 and not top[1].data.any()


def test_sigmoid_ce_ignore_label_compares_truncated_targets():
    # Caffe casts each target to int before comparing with ignore_label: soft targets below 1
    # all match ignore_label 0
    x = np.array([[0.5, -1.0, 2.0, 0.3]])
    t = np.array([[0.3, 0.9, 1.0, 0.0]])
    _, top = _run(_layer("SigmoidCrossEntropyLoss",
                         "loss_param { ignore_label: 0 normalization: NONE }"), x, t)
    only = -(1.0 * np.log(1 / (1 + np.exp(-2.0))))
    np.testing.assert_allclose(float(top[0].data), only, rtol=1e-5)


# ---------------------------------------------------------------------------- label backward
BACKWARD_CASES = [
    ("SoftmaxWithLoss", [SCORES, np.zeros(4)], 1, "label"),
    ("MultinomialLogisticLoss", [np.full((4, 5), 0.2), np.zeros(4)], 1, "label"),
    ("HingeLoss", [SCORES, np.zeros(4)], 1, "label"),
    ("SigmoidCrossEntropyLoss", [SCORES, np.full((4, 5), 0.5)], 1, "target"),
    ("InfogainLoss", [SCORES, np.zeros(4), H], 1, "label"),
    ("InfogainLoss", [SCORES, np.zeros(4), H], 2, "infogain matrix"),
]


@pytest.mark.parametrize("type_name,arrays,index,what", BACKWARD_CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in BACKWARD_CASES])
def test_backward_into_labels_is_refused(type_name, arrays, index, what):
    layer = _layer(type_name, n_bottom=len(arrays))
    bottom, top = _run(layer, *arrays)
    down = [i in (0, index) for i in range(len(arrays))]
    with pytest.raises(LayerSetupError,
                       match=rf"'lossy' \({type_name}\) cannot backpropagate to its {what}"):
        layer.Backward(top, down, bottom)


def _net(text: str) -> caffe.Net:
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)


def test_net_refuses_a_target_that_needs_a_gradient_unless_propagate_down_false():
    text = """
    layer { name: "in" type: "Input" top: "x" top: "y"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }
    layer { name: "fc" type: "InnerProduct" bottom: "y" top: "t"
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "l"
            %s }
    """
    net = _net(text % "")
    net.forward()
    with pytest.raises(LayerSetupError, match="'loss'.*cannot backpropagate to its target"):
        net.backward()
    net = _net(text % "propagate_down: true propagate_down: false")
    net.forward()
    net.backward()


def test_force_backward_never_reaches_labels_but_reaches_the_infogain_bottom():
    sm = _net("""
    force_backward: true
    layer { name: "in" type: "Input" top: "x" top: "y"
            input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "l" }
    """)
    sm.blobs["x"].data[...] = SCORES
    sm.blobs["y"].data[...] = [0, 1, 2, 3]
    sm.forward()
    sm.backward()
    assert sm.blobs["x"].diff.any() and not sm.blobs["y"].diff.any()
    # InfogainLoss does not shield its H bottom from force_backward: Caffe then aborts
    ig = _net("""
    force_backward: true
    layer { name: "in" type: "Input" top: "x" top: "y" top: "H"
            input_param { shape { dim: 4 dim: 5 } shape { dim: 4 }
                          shape { dim: 1 dim: 1 dim: 5 dim: 5 } } }
    layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "y" bottom: "H" top: "l" }
    """)
    ig.blobs["H"].data[...] = H
    ig.forward()
    with pytest.raises(LayerSetupError, match="'loss'.*infogain matrix"):
        ig.backward()


# ---------------------------------------------------------------------------- infogain file
@pytest.fixture
def folder():
    with tempfile.TemporaryDirectory(prefix="neocaffe-infogain-") as d:
        yield d


def _source(path: str) -> str:
    return f"infogain_loss_param {{ source: '{path}' }}"


def _loss_and_grad(layer, *arrays):
    bottom, top = _run(layer, *arrays)
    layer.Backward(top, [True] + [False] * (len(arrays) - 1), bottom)
    return float(top[0].data), bottom[0].diff


def test_infogain_matrix_from_file_matches_the_bottom(folder):
    path = os.path.join(folder, "H.binaryproto")
    with open(path, "wb") as f:
        f.write(array_to_blobproto(H.astype(np.float32)).SerializeToString())
    labels = np.array([0.0, 4.0, 2.0, 1.0])
    loss_f, grad_f = _loss_and_grad(_layer("InfogainLoss", _source(path)), SCORES, labels)
    loss_b, grad_b = _loss_and_grad(_layer("InfogainLoss", n_bottom=3), SCORES, labels, H)
    np.testing.assert_allclose(loss_f, loss_b, rtol=1e-6)
    np.testing.assert_allclose(grad_f, grad_b, rtol=1e-6, atol=1e-7)
    assert grad_f.any()


def test_missing_infogain_file_names_the_file_and_layer(folder):
    path = os.path.join(folder, "nowhere.binaryproto")
    with pytest.raises(FileFormatError, match=rf"'lossy'.*{path}.*does not exist"):
        _run(_layer("InfogainLoss", _source(path)), SCORES, np.zeros(4))


def test_corrupt_infogain_file_names_the_file(folder):
    path = os.path.join(folder, "corrupt.binaryproto")
    with open(path, "wb") as f:
        f.write(b"\xff\xfe not a protobuf at all \x00\x01")
    with pytest.raises(FileFormatError, match=rf"'lossy'.*{path}"):
        _run(_layer("InfogainLoss", _source(path)), SCORES, np.zeros(4))


def test_infogain_file_of_the_wrong_size(folder):
    path = os.path.join(folder, "small.binaryproto")
    with open(path, "wb") as f:
        f.write(array_to_blobproto(np.eye(3, dtype=np.float32)).SerializeToString())
    with pytest.raises(LayerSetupError, match=r"'lossy'.*must be 5x5.*has 9 values"):
        _run(_layer("InfogainLoss", _source(path)), SCORES, np.zeros(4))


def test_infogain_needs_a_matrix_and_rejects_legacy_normalize():
    with pytest.raises(LayerSetupError, match="'lossy'.*third bottom.*source"):
        _run(_layer("InfogainLoss"), SCORES, np.zeros(4))
    with pytest.raises(LayerSetupError, match="'lossy'.*normalize is deprecated"):
        _run(_layer("InfogainLoss", "loss_param { normalize: true }", n_bottom=3), SCORES,
             np.zeros(4), H)


def test_shape_checks_name_the_layer():
    with pytest.raises(LayerSetupError, match="'lossy'.*number of labels"):
        _run(_layer("InfogainLoss", n_bottom=3), SCORES, np.zeros((4, 2)), H)
    with pytest.raises(LayerSetupError, match="'lossy'.*same count"):
        _run(_layer("SigmoidCrossEntropyLoss"), SCORES, np.zeros((4, 3)))
    with pytest.raises(LayerSetupError, match="'lossy'.*one value per item"):
        _run(_layer("MultinomialLogisticLoss"), SCORES, np.zeros((4, 2)))
    with pytest.raises(LayerSetupError, match="'lossy'.*same C"):
        _run(_layer("ContrastiveLoss", n_bottom=3), SCORES, np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(LayerSetupError, match="'lossy'.*at most the number of classes"):
        _run(_layer("Accuracy", "accuracy_param { top_k: 6 }"), SCORES, np.zeros(4))


# ---------------------------------------------------------------------------- loss_weight
WEIGHT_NETS = {
    "SoftmaxWithLoss": ([(4, 5, 2), (4, 1, 2)], "loss_param { ignore_label: 1 }"),
    "MultinomialLogisticLoss": ([(4, 5), (4,)], ""),
    "HingeLoss": ([(4, 5), (4,)], "hinge_loss_param { norm: L2 }"),
    "SigmoidCrossEntropyLoss": ([(4, 5), (4, 5)], ""),
    "InfogainLoss": ([(4, 5), (4,), (1, 1, 5, 5)], "infogain_loss_param { axis: 1 }"),
    "ContrastiveLoss": ([(4, 3), (4, 3), (4,)], ""),
    "EuclideanLoss": ([(4, 3), (4, 3)], ""),
}


def _weighted_net(type_name: str, weight: float) -> caffe.Net:
    """Inputs -> the loss with ``loss_weight``. InfogainLoss cannot take force_backward (it
    would reach its H bottom), so its scores come from an InnerProduct instead."""
    shapes, param = WEIGHT_NETS[type_name]
    names = [f"b{i}" for i in range(len(shapes))]
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    bottoms = list(names)
    ip = ""
    if type_name == "InfogainLoss":
        bottoms[0] = "s"
        ip = """layer { name: "ip" type: "InnerProduct" bottom: "b0" top: "s"
                inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }"""
    text = f"""
    force_backward: {str(type_name != "InfogainLoss").lower()}
    layer {{ name: "in" type: "Input" {" ".join(f'top: "{n}"' for n in names)}
            input_param {{ {dims} }} }}
    {ip}
    layer {{ name: "loss" type: "{type_name}" {" ".join(f'bottom: "{n}"' for n in bottoms)}
            top: "l" loss_weight: {weight} {param} }}
    """
    caffe.set_random_seed(5)
    net = _net(text)
    rng = np.random.default_rng(3)
    for n, s in zip(names, shapes):
        net.blobs[n].data[...] = rng.uniform(0.05, 1.0, size=s)
    if type_name in ("SoftmaxWithLoss", "MultinomialLogisticLoss", "HingeLoss", "InfogainLoss"):
        net.blobs["b1"].data[...] = rng.integers(0, 5, size=shapes[1])
    if type_name == "ContrastiveLoss":
        net.blobs["b2"].data[...] = [0, 1, 0, 1]
    return net


@pytest.mark.parametrize("type_name", sorted(WEIGHT_NETS))
def test_loss_weight_scales_the_loss_and_every_bottom_diff(type_name):
    one, three = _weighted_net(type_name, 1.0), _weighted_net(type_name, 3.0)
    out1, out3 = one.forward(), three.forward()
    np.testing.assert_allclose(out3["l"], out1["l"], rtol=1e-6)  # the top holds the raw loss
    one.backward()
    three.backward()
    diffs = 0
    for name in one.blobs:
        if name == "l":
            continue
        d1, d3 = one.blobs[name].diff, three.blobs[name].diff
        np.testing.assert_allclose(d3, 3.0 * d1, rtol=1e-5, atol=1e-7, err_msg=name)
        diffs += bool(d1.any())
    for p1, p3 in zip(one.params.values(), three.params.values()):
        for b1, b3 in zip(p1, p3):
            np.testing.assert_allclose(b3.diff, 3.0 * b1.diff, rtol=1e-5, atol=1e-7)
            diffs += bool(b1.diff.any())
    assert diffs >= 1
