"""In-place wiring (a top named like the bottom at its index): refused with a clear message for
layers that cannot compute in place (Caffe mis-computes or CHECK-fails), still working for the
elementwise layers real nets run in place. Also 0-D bottoms where an axis is needed."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe._layers.base import LossLayer
from caffe.blob import Blob
from caffe.errors import LayerSetupError, NetDefinitionError, ShapeMismatchError
from caffe.proto import caffe_pb2

INPUT = 'layer { name: "in" type: "Input" top: "a" top: "b" ' \
        'input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }\n'


def _net(body: str, phase=caffe.TRAIN) -> caffe.Net:
    text = "force_backward: true\n" + INPUT + body
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


@pytest.mark.parametrize("type_name, body", [
    ("Tile", 'tile_param { tiles: 2 }'),
    ("InnerProduct", 'inner_product_param { num_output: 3 }'),
    ("Reshape", 'reshape_param { shape { dim: 6 } }'),
    ("Concat", ''),
])
def test_layers_that_cannot_run_in_place_are_refused(type_name, body):
    layer = f'layer {{ name: "x" type: "{type_name}" bottom: "a" top: "a" {body} }}'
    with pytest.raises(NetDefinitionError) as e:
        _net(layer)
    assert str(e.value) == (f"Layer 'x' ({type_name}) cannot compute in place (top 'a' is also "
                            "its bottom): give the top a new name")


def test_a_loss_on_its_own_prediction_is_refused():
    layer = 'layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "a" }'
    with pytest.raises(NetDefinitionError, match=r"'loss' \(EuclideanLoss\) cannot compute in "
                                                 "place .top 'a'"):
        _net(layer)


def test_user_registered_types_decide_for_themselves():
    @caffe.register_layer("DoubleForInPlaceTest")
    class Double(caffe.Layer):
        def reshape(self, bottom, top):
            pass

        def forward(self, bottom, top):
            bottom[0].tensor.mul_(2)

    try:
        net = _net('layer { name: "d" type: "DoubleForInPlaceTest" bottom: "a" top: "a" }',
                   caffe.TEST)
        net.blobs["a"].data[...] = 1
        assert (net.forward()["a"] == 2).all()
    finally:
        caffe.registry._REGISTRY.pop("DoubleForInPlaceTest")


@pytest.mark.parametrize("type_name, body", [
    ("ReLU", 'relu_param { negative_slope: 0.1 }'),
    ("Dropout", 'dropout_param { dropout_ratio: 0.3 }'),
    ("BatchNorm", ''),
    ("Scale", 'scale_param { bias_term: true filler { type: "gaussian" } '
              'bias_filler { type: "gaussian" } }'),
])
def test_in_place_elementwise_layers_match_out_of_place(type_name, body):
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    results = []
    for top in ("a", "y"):
        caffe.set_random_seed(11)
        net = _net(f'layer {{ name: "l" type: "{type_name}" bottom: "a" top: "{top}" {body} }}')
        net.blobs["a"].data[...] = x
        net.forward()
        y = net.blobs[top].data.copy()
        net.blobs[top].diff[...] = dy
        net.backward()
        results.append((y, net.blobs["a"].diff.copy()))
    (y1, dx1), (y2, dx2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-6)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-5, atol=1e-7)


def test_loss_layer_base_refuses_a_0d_prediction():
    class Loss(LossLayer):
        type_name = "SomeLoss"

    layer = Loss(caffe_pb2.LayerParameter(name="l"), caffe.TRAIN)
    pred, label = Blob(), Blob()
    pred.reshape(())
    label.reshape(())
    with pytest.raises(LayerSetupError, match=r"'l' \(SomeLoss\).*0-D blob"):
        layer.SetUp([pred, label], [Blob()])


def test_canonical_axis_of_a_0d_blob_is_refused():
    blob = Blob()
    blob.reshape(())
    with pytest.raises(ShapeMismatchError, match="0-D blob has no axes"):
        blob.canonical_axis(0)
    blob.reshape(3)
    assert blob.canonical_axis(0) == 0 and blob.canonical_axis(-1) == 0
