"""MemoryData through net.set_input_arrays: Caffe's Reset rules (shapes, a multiple of the
batch size), wrap-around, views of the caller's memory, and set_batch_size."""

from __future__ import annotations

import numpy as np
import pytest

import caffe
from caffe.errors import LayerSetupError, ShapeMismatchError


@pytest.fixture
def net(tmp_path):
    (tmp_path / "m.prototxt").write_text(
        'layer { name: "m" type: "MemoryData" top: "data" top: "label" memory_data_param { '
        "batch_size: 2 channels: 1 height: 2 width: 3 } }")
    return caffe.Net(str(tmp_path / "m.prototxt"), caffe.TRAIN)


def _arrays(n):
    data = np.arange(n * 6, dtype=np.float32).reshape(n, 1, 2, 3)
    return data, np.arange(n, dtype=np.float32)


def test_shapes_before_and_after_the_first_batch(net):
    assert net.blobs["data"].shape == (2, 1, 2, 3)
    assert net.blobs["label"].shape == (2,)
    net.set_input_arrays(*_arrays(2))
    net.forward()
    assert net.blobs["label"].shape == (2, 1, 1, 1)


def test_batches_wrap_around(net):
    data, labels = _arrays(6)
    net.set_input_arrays(data, labels)
    got = [net.forward()["label"].ravel().tolist() for _ in range(4)]
    assert got == [[0, 1], [2, 3], [4, 5], [0, 1]]
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])


def test_reset_starts_again_and_views_the_callers_memory(net):
    data, labels = _arrays(4)
    net.set_input_arrays(data, labels)
    net.forward()
    net.set_input_arrays(data, labels.reshape(4, 1, 1, 1))
    data[0, 0, 0, 0] = 99.0  # float32 C-contiguous arrays are not copied, as in pycaffe
    net.forward()
    assert net.blobs["data"].data[0, 0, 0, 0] == 99.0


def test_other_dtypes_are_converted(net):
    data, labels = _arrays(2)
    net.set_input_arrays(data.astype(np.float64), labels.astype(int))
    np.testing.assert_array_equal(net.forward()["data"], data)


@pytest.mark.parametrize("data_shape, label_shape, pattern", [
    ((3, 1, 2, 3), (3,), "positive multiple of the batch size 2"),
    ((0, 1, 2, 3), (0,), "positive multiple of the batch size 2"),
    ((2, 3, 2, 1), (2,), r"data array must have shape \(num, 1, 2, 3\)"),
    ((2, 6), (2,), r"data array must have shape"),
    ((2, 1, 2, 3), (2, 2), r"labels array must have shape \(num,\) or \(num, 1, 1, 1\)"),
    ((4, 1, 2, 3), (2,), "same first dimension; got 4 and 2"),
])
def test_bad_arrays_are_rejected(net, data_shape, label_shape, pattern):
    with pytest.raises(ShapeMismatchError, match=pattern):
        net.set_input_arrays(np.zeros(data_shape, np.float32), np.zeros(label_shape, np.float32))


def test_forward_before_set_input_arrays_raises(net):
    with pytest.raises(LayerSetupError, match="call net.set_input_arrays"):
        net.forward()


def test_set_input_arrays_needs_a_memory_data_layer(tmp_path):
    (tmp_path / "i.prototxt").write_text(
        'layer { name: "i" type: "Input" top: "x" input_param { shape { dim: 1 } } }')
    net = caffe.Net(str(tmp_path / "i.prototxt"), caffe.TEST)
    with pytest.raises(caffe.errors.NetDefinitionError, match="needs a MemoryData layer"):
        net.set_input_arrays(*_arrays(2))


def test_set_batch_size(net):
    layer = net.layers[0]
    net.set_input_arrays(*_arrays(6))
    layer.set_batch_size(3)
    assert net.forward()["label"].ravel().tolist() == [0, 1, 2]
    with pytest.raises(ShapeMismatchError, match="not a multiple of the new batch size 4"):
        layer.set_batch_size(4)


def test_missing_dimensions_are_refused(tmp_path):
    (tmp_path / "m.prototxt").write_text(
        'layer { name: "m" type: "MemoryData" top: "data" top: "label" memory_data_param { '
        "batch_size: 2 channels: 1 height: 2 } }")
    with pytest.raises(LayerSetupError, match="must all be given and positive"):
        caffe.Net(str(tmp_path / "m.prototxt"), caffe.TRAIN)
