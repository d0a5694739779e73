"""The layer-construction findings of the fuzz targets, kept as plain regression tests: each
net used to fail with an unchecked IndexError / ZeroDivisionError / torch RuntimeError and now
raises a CaffeError that names the layer and the problem (or, for the pooling case, works as
Caffe does)."""

from __future__ import annotations

import numpy as np
import pytest
from fuzzkit import check_outcome
from google.protobuf import text_format

import caffe
from caffe.errors import LayerSetupError
from caffe.proto import caffe_pb2


def _net(inputs: list[list[int]], layer: str, phase=caffe.TRAIN) -> caffe.Net:
    text = 'force_backward: true layer { name: "in" type: "Input" %s input_param { %s } }\n' % (
        " ".join(f'top: "b{i}"' for i in range(len(inputs))),
        " ".join("shape { %s }" % " ".join(f"dim: {d}" for d in dims) for dims in inputs))
    net = caffe.Net(text_format.Parse(text + layer, caffe_pb2.NetParameter()), phase)
    net.forward()
    net.backward()
    return net


SCALAR_BOTTOMS = [
    ("ArgMax", 1, ""), ("Accuracy", 2, ""), ("HingeLoss", 2, ""), ("ContrastiveLoss", 3, ""),
    ("EuclideanLoss", 2, ""), ("SigmoidCrossEntropyLoss", 2, ""),
    ("MultinomialLogisticLoss", 2, ""), ("SoftmaxWithLoss", 2, "softmax_param { axis: 0 }"),
    ("BatchReindex", 2, ""),
]


@pytest.mark.parametrize("type_name, n_bottoms, param", SCALAR_BOTTOMS,
                         ids=[c[0] for c in SCALAR_BOTTOMS])
def test_scalar_bottoms_are_refused(type_name, n_bottoms, param):
    shapes = [[]] * n_bottoms
    if type_name == "BatchReindex":
        shapes = [[], [1]]
    bottoms = " ".join(f'bottom: "b{i}"' for i in range(n_bottoms))
    layer = f'layer {{ name: "l" type: "{type_name}" {bottoms} top: "t" {param} }}'
    err = check_outcome(lambda: _net(shapes, layer))
    assert isinstance(err, LayerSetupError) and "axis" in str(err), err


BAD_PARAMS = [
    ("pooling stride 0", [[1, 1, 4, 4]],
     'type: "Pooling" pooling_param { kernel_size: 2 stride: 0 }', "stride"),
    ("deconvolution dilation 0", [[1, 2, 3, 3]],
     'type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 3 dilation: 0 }',
     "dilation"),
    ("batch norm eps < 0", [[2, 2, 2, 2]], 'type: "BatchNorm" batch_norm_param { eps: -1 }',
     "eps"),
    ("gaussian filler std nan", [[2, 3]],
     'type: "InnerProduct" inner_product_param { num_output: 2 '
     'weight_filler { type: "gaussian" std: nan } }', "std"),
    ("uniform filler max inf", [[2, 3]],
     'type: "InnerProduct" inner_product_param { num_output: 2 '
     'weight_filler { type: "uniform" max: inf } }', "finite"),
]


@pytest.mark.parametrize("shapes, layer, word", [c[1:] for c in BAD_PARAMS],
                         ids=[c[0] for c in BAD_PARAMS])
def test_bad_parameters_raise_clear_errors(shapes, layer, word):
    text = f'layer {{ name: "l" {layer} bottom: "b0" top: "t" }}'
    err = check_outcome(lambda: _net(shapes, text))
    assert isinstance(err, LayerSetupError) and word in str(err), err


def test_max_pooling_window_past_the_input():
    """kernel 1, stride 2, ceil rounding on 8 x 9: the last row of windows lies wholly past
    the input. Caffe leaves -FLT_MAX there with mask -1 and passes no gradient back."""
    net = _net([[1, 1, 8, 9]], 'layer { name: "l" type: "Pooling" bottom: "b0" top: "t" '
               'top: "mask" pooling_param { pool: MAX kernel_size: 1 stride: 2 } }')
    x = np.arange(72, dtype=np.float32).reshape(1, 1, 8, 9)
    net.blobs["b0"].data[...] = x
    net.forward()
    top, mask = net.blobs["t"].data, net.blobs["mask"].data
    assert top.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(top[0, 0, :4], x[0, 0, 0:8:2, 0:9:2])
    assert (top[0, 0, 4] == -np.float32(3.4028235e38)).all() and (mask[0, 0, 4] == -1).all()
    net.blobs["t"].diff[...] = 1
    net.backward()
    assert net.blobs["b0"].diff.sum() == 20  # the 4 x 5 windows inside the input
