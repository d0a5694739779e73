"""In-place runs (top is bottom) of the neuron family, as Caffe runs them.

Layers whose backward reads the output, a kept copy or a mask give exactly the out-of-place
results. Layers whose Caffe backward reads the bottom data (BNLL, Log, Power, Clip) read the
output instead when run in place, as Caffe does. In-place forwards write into the bottom's own
memory and keep no full-size buffer beyond what Caffe keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layer import Phase
from caffe.net import create_layer
from caffe.proto import caffe_pb2
from caffe.testing import make_blobs

SHAPE = (2, 3, 4, 5)
SEED = 77


def _layer(type_: str, param: str, n_bottom: int, phase: Phase = Phase.TRAIN):
    lp = caffe_pb2.LayerParameter(name="l", type=type_)
    text_format.Merge(param, lp)
    lp.bottom.extend(f"b{i}" for i in range(n_bottom))
    lp.top.append("b0")
    lp.phase = phase
    return create_layer(lp, phase)


def _normal(rng, shape=SHAPE):
    return rng.standard_normal(shape)


# (type, param, bottoms, phase, kept full-size tensors)
SAME = [
    ("Sigmoid", "", lambda r: [_normal(r)], Phase.TRAIN, 0),
    ("TanH", "", lambda r: [_normal(r)], Phase.TRAIN, 0),
    ("ELU", "elu_param { alpha: 0.7 }", lambda r: [_normal(r)], Phase.TRAIN, 0),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda r: [_normal(r)], Phase.TRAIN,
     0),
    ("Swish", "swish_param { beta: 1.5 }", lambda r: [_normal(r)], Phase.TRAIN, 1),
    ("PReLU", "prelu_param { filler { type: 'uniform' min: 0.05 max: 0.5 } }",
     lambda r: [_normal(r)], Phase.TRAIN, 1),
    ("PReLU", "prelu_param { channel_shared: true }", lambda r: [_normal(r)], Phase.TRAIN, 1),
    ("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda r: [_normal(r)], Phase.TRAIN, 1),
    ("Dropout", "", lambda r: [_normal(r)], Phase.TEST, 0),
    ("Bias", "bias_param { filler { type: 'uniform' min: -1 max: 1 } }",
     lambda r: [_normal(r)], Phase.TRAIN, 0),
    ("Bias", "", lambda r: [_normal(r), _normal(r, (3, 4))], Phase.TRAIN, 0),
    ("Scale", "scale_param { filler { type: 'uniform' min: 0.5 max: 1.5 } }",
     lambda r: [_normal(r)], Phase.TRAIN, 1),
    ("Scale", "scale_param { bias_term: true filler { type: 'uniform' min: 0.5 max: 1.5 } "
     "bias_filler { type: 'uniform' min: -1 max: 1 } }", lambda r: [_normal(r)], Phase.TRAIN, 1),
    ("Scale", "scale_param { axis: 0 num_axes: -1 filler { type: 'uniform' min: 0.5 max: 1.5 } }",
     lambda r: [_normal(r)], Phase.TRAIN, 1),
    ("Scale", "scale_param { bias_term: true }", lambda r: [_normal(r), _normal(r, (3, 4))],
     Phase.TRAIN, 1),
]

# Caffe's backward reads the bottom data, which in place holds the output
READS_OUTPUT = [
    ("BNLL", "", lambda r: [_normal(r)]),
    ("Log", "log_param { scale: 2 shift: 1 }", lambda r: [r.uniform(0.5, 2.0, SHAPE)]),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda r: [_normal(r)]),
    ("Power", "power_param { power: 3 scale: 0.8 }", lambda r: [r.uniform(0.5, 2.0, SHAPE)]),
    ("Power", "power_param { power: 0.5 scale: 0.8 shift: 2 }",
     lambda r: [r.uniform(0.5, 2.0, SHAPE)]),
    ("Clip", "clip_param { min: -0.5 max: 0.5 }", lambda r: [_normal(r)]),
]


def _out_of_place(type_, param, arrays, phase, dy, data_for_backward=None):
    caffe.set_random_seed(SEED)
    layer = _layer(type_, param, len(arrays), phase)
    bottom = make_blobs(*arrays, dtype=torch.float32)
    top = Blob()
    layer.SetUp(bottom, [top])
    caffe.set_random_seed(SEED + 1)
    layer.Forward(bottom, [top])
    if data_for_backward is not None:
        bottom[0].data[...] = data_for_backward
    top.diff[...] = dy
    layer.Backward([top], [True] * len(bottom), bottom)
    return layer, bottom, top


def _in_place(type_, param, arrays, phase, dy):
    caffe.set_random_seed(SEED)
    layer = _layer(type_, param, len(arrays), phase)
    bottom = make_blobs(*arrays, dtype=torch.float32)
    layer.SetUp(bottom, [bottom[0]])
    storage = bottom[0].tensor.data_ptr()
    caffe.set_random_seed(SEED + 1)
    layer.Forward(bottom, [bottom[0]])
    assert bottom[0].tensor.data_ptr() == storage, "the forward did not write in place"
    y = bottom[0].data.copy()
    bottom[0].diff[...] = dy
    layer.Backward([bottom[0]], [True] * len(bottom), bottom)
    return layer, bottom, y


def _inputs(make):
    rng = np.random.default_rng(5)
    arrays = make(rng)
    return arrays, rng.standard_normal(arrays[0].shape).astype(np.float32)


@pytest.mark.parametrize("type_,param,make,phase,kept", SAME,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SAME)])
def test_in_place_equals_out_of_place(type_, param, make, phase, kept):
    arrays, dy = _inputs(make)
    ref_layer, ref_bottom, ref_top = _out_of_place(type_, param, arrays, phase, dy)
    layer, bottom, y = _in_place(type_, param, arrays, phase, dy)
    np.testing.assert_allclose(y, ref_top.data, rtol=1e-6, atol=1e-7)
    for i, (b, r) in enumerate(zip(bottom, ref_bottom)):
        np.testing.assert_allclose(b.diff, r.diff, rtol=1e-5, atol=1e-6, err_msg=f"bottom {i}")
    for i, (p, r) in enumerate(zip(layer.blobs, ref_layer.blobs)):
        np.testing.assert_allclose(p.diff, r.diff, rtol=1e-5, atol=1e-5, err_msg=f"param {i}")
    big = [v for v in vars(layer).values()
           if isinstance(v, torch.Tensor) and v.numel() >= bottom[0].count]
    assert len(big) == kept, "full-size buffers kept beyond what Caffe keeps"


@pytest.mark.parametrize("type_,param,make", READS_OUTPUT,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(READS_OUTPUT)])
def test_in_place_backward_reads_the_output_like_caffe(type_, param, make):
    arrays, dy = _inputs(make)
    _, _, ref_top = _out_of_place(type_, param, arrays, Phase.TRAIN, dy)
    _, ref_bottom, _ = _out_of_place(type_, param, arrays, Phase.TRAIN, dy,
                                     data_for_backward=ref_top.data.copy())
    _, bottom, y = _in_place(type_, param, arrays, Phase.TRAIN, dy)
    np.testing.assert_allclose(y, ref_top.data, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bottom[0].diff, ref_bottom[0].diff, rtol=1e-5, atol=1e-6)


def test_clip_in_place_passes_every_gradient():
    arrays, dy = _inputs(lambda r: [3 * _normal(r)])
    _, bottom, _ = _in_place("Clip", "clip_param { min: -0.5 max: 0.5 }", arrays, Phase.TRAIN,
                             dy)
    np.testing.assert_array_equal(bottom[0].diff, dy)


@pytest.mark.parametrize("param", ["", "threshold_param { threshold: 0.3 }"])
def test_threshold_in_place(param):
    arrays, _ = _inputs(lambda r: [_normal(r)])
    layer = _layer("Threshold", param, 1)
    (blob,) = make_blobs(*arrays, dtype=torch.float32)
    layer.SetUp([blob], [blob])
    layer.Forward([blob], [blob])
    t = layer.threshold
    np.testing.assert_array_equal(blob.data, (arrays[0].astype(np.float32) > t).astype(float))


def test_absval_refuses_in_place():
    layer = _layer("AbsVal", "", 1)
    (blob,) = make_blobs(np.ones((2, 3)), dtype=torch.float32)
    with pytest.raises(LayerSetupError, match="in-place"):
        layer.SetUp([blob], [blob])


def test_in_place_scale_and_prelu_in_a_net():
    """ResNet-style Scale + bias and PReLU in place after a producer whose backward needs no
    data (as a convolution), through caffe.Net."""
    net_param = caffe_pb2.NetParameter()
    text_format.Merge("""
        force_backward: true
        layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3
                dim: 2 dim: 2 } } }
        layer { name: 'lin' type: 'Power' bottom: 'x' top: 'h'
                power_param { scale: 0.5 shift: 0.1 } }
        layer { name: 'scale' type: 'Scale' bottom: 'h' top: 'h'
                scale_param { bias_term: true filler { type: 'constant' value: 2 }
                              bias_filler { type: 'constant' value: 0.5 } } }
        layer { name: 'prelu' type: 'PReLU' bottom: 'h' top: 'h' }
    """, net_param)
    net = caffe.Net(net_param, caffe.TRAIN)
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    h = 0.5 * x + 0.1
    z = 2 * h + 0.5
    np.testing.assert_allclose(net.blobs["h"].data, np.where(z > 0, z, 0.25 * z), rtol=1e-6)
    net.blobs["h"].diff[...] = 1.0
    net.backward()
    dz = np.where(z > 0, 1.0, 0.25)
    np.testing.assert_allclose(net.params["scale"][0].diff,
                               (dz * h).sum((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(net.params["scale"][1].diff, dz.sum((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(net.params["prelu"][0].diff,
                               np.where(z > 0, 0, z).sum((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(net.blobs["x"].diff, dz * 2 * 0.5, rtol=1e-5)
