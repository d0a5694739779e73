"""Dropout: mask statistics and scaling in TRAIN, seeded reproducibility, the TEST identity,
in-place runs, and parameter checks."""

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


def _dropout(ratio: float | None = None, phase: Phase = Phase.TRAIN):
    lp = caffe_pb2.LayerParameter(name="drop", type="Dropout", bottom=["x"], top=["y"])
    if ratio is not None:
        lp.dropout_param.dropout_ratio = ratio
    lp.phase = phase
    return create_layer(lp, phase)


def _run(layer, x: np.ndarray, in_place: bool = False):
    bottom = Blob(*x.shape)
    bottom.data[...] = x
    top = bottom if in_place else Blob()
    layer.SetUp([bottom], [top])
    layer.Forward([bottom], [top])
    return bottom, top


def test_train_mask_statistics_and_scaling():
    p = 0.3
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(10, 100, 100)).astype(np.float32)
    layer = _dropout(p)
    bottom, top = _run(layer, x)
    y = top.data
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(bottom.data, x)  # the bottom is left alone

    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    top.diff[...] = dy
    layer.Backward([top], [True], [bottom])
    np.testing.assert_allclose(bottom.diff, np.where(kept, dy / (1 - p), 0), rtol=1e-6)


def test_default_ratio_is_half():
    x = np.ones((100, 1000), np.float32)
    _, top = _run(_dropout(), x)
    values = np.unique(top.data)
    np.testing.assert_array_equal(values, [0.0, 2.0])
    assert abs((top.data != 0).mean() - 0.5) < 0.01


def test_seeded_masks_are_reproducible():
    x = np.ones((50, 50), np.float32)
    caffe.set_random_seed(42)
    _, a = _run(_dropout(0.5), x)
    caffe.set_random_seed(42)
    _, b = _run(_dropout(0.5), x)
    caffe.set_random_seed(43)
    _, c = _run(_dropout(0.5), x)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)


def test_new_mask_every_forward():
    x = np.ones((50, 50), np.float32)
    layer = _dropout(0.5)
    bottom, top = _run(layer, x)
    first = top.data.copy()
    layer.Forward([bottom], [top])
    assert not np.array_equal(first, top.data)


def test_ratio_zero_keeps_everything():
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    _, top = _run(_dropout(0.0), x)
    np.testing.assert_array_equal(top.data, x)


def test_test_phase_is_the_identity():
    x = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(np.float32)
    layer = _dropout(0.3, Phase.TEST)
    bottom, top = _run(layer, x)
    np.testing.assert_array_equal(top.data, x)
    top.data[...] = 0  # the top is a copy, not a view of the bottom
    np.testing.assert_array_equal(bottom.data, x)
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    top.diff[...] = dy
    layer.Backward([top], [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, dy)


def test_test_phase_in_place_leaves_data_and_diff():
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    layer = _dropout(0.3, Phase.TEST)
    blob, _ = _run(layer, x, in_place=True)
    np.testing.assert_array_equal(blob.data, x)
    blob.diff[...] = 1.5
    layer.Backward([blob], [True], [blob])
    np.testing.assert_array_equal(blob.diff, 1.5)


def test_in_place_train_matches_out_of_place():
    x = np.random.default_rng(6).standard_normal((4, 6, 5)).astype(np.float32)
    dy = np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)
    caffe.set_random_seed(9)
    layer = _dropout(0.4)
    bottom, top = _run(layer, x)
    top.diff[...] = dy
    layer.Backward([top], [True], [bottom])

    caffe.set_random_seed(9)
    layer2 = _dropout(0.4)
    blob = Blob(*x.shape)
    blob.data[...] = x
    layer2.SetUp([blob], [blob])
    storage = blob.tensor.data_ptr()
    layer2.Forward([blob], [blob])
    assert blob.tensor.data_ptr() == storage  # written in place
    np.testing.assert_array_equal(blob.data, top.data)
    blob.diff[...] = dy
    layer2.Backward([blob], [True], [blob])
    np.testing.assert_array_equal(blob.diff, bottom.diff)


def test_only_the_mask_is_kept():
    x = np.ones((8, 9), np.float32)
    layer = _dropout(0.5)
    _run(layer, x, in_place=True)
    big = [v for v in vars(layer).values()
           if isinstance(v, torch.Tensor) and v.numel() >= x.size]
    assert len(big) == 1


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_ratio_is_rejected(ratio):
    with pytest.raises(LayerSetupError, match="dropout_ratio"):
        _run(_dropout(ratio), np.ones((2, 2), np.float32))


def test_dropout_in_a_test_net_is_the_identity():
    net_param = caffe_pb2.NetParameter()
    text_format.Merge("""
        force_backward: true
        layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 5 } } }
        layer { name: 'drop' type: 'Dropout' bottom: 'x' top: 'x'
                dropout_param { dropout_ratio: 0.9 } }
    """, net_param)
    net = caffe.Net(net_param, caffe.TEST)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs["x"].data, x)
