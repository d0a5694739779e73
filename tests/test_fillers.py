"""Fillers against Caffe's filler.hpp: statistics of the random fillers (seeded), Caffe's fan
computation for xavier/msra, gaussian sparsity, positive_unitball rows, and the bilinear
kernel's exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.fillers import fill, make_filled
from caffe.proto import caffe_pb2

FP = caffe_pb2.FillerParameter


def _filled(shape, **kw) -> np.ndarray:
    return make_filled(FP(**kw), tuple(shape)).numpy().astype(np.float64)


def test_constant():
    np.testing.assert_array_equal(_filled((3, 4), type="constant", value=2.5), 2.5)
    np.testing.assert_array_equal(_filled((2,)), 0.0)  # the default filler


def test_uniform_range_and_moments():
    x = _filled((200, 100), type="uniform", min=-2.0, max=3.0)
    assert x.min() >= -2.0 and x.max() <= 3.0
    assert abs(x.mean() - 0.5) < 0.03
    assert abs(x.var() - 25.0 / 12.0) < 0.05


def test_gaussian_moments():
    x = _filled((200, 100), type="gaussian", mean=1.0, std=0.5)
    assert abs(x.mean() - 1.0) < 0.01
    assert abs(x.std() - 0.5) < 0.01


@pytest.mark.parametrize("sparse", [0, 3, 10])
def test_gaussian_sparse_keeps_sparse_over_num_outputs(sparse):
    x = _filled((10, 4000), type="gaussian", std=1.0, sparse=sparse)
    frac = (x != 0).mean()
    assert abs(frac - sparse / 10) < 0.01, frac
    if sparse:
        kept = x[x != 0]
        assert abs(kept.std() - 1.0) < 0.03


def test_gaussian_sparse_larger_than_num_outputs_is_rejected():
    with pytest.raises(LayerSetupError, match="sparse 5"):
        make_filled(FP(type="gaussian", sparse=5), (4, 10))


@pytest.mark.parametrize("kind", ["constant", "uniform", "positive_unitball", "xavier", "msra",
                                  "bilinear"])
def test_sparse_only_for_gaussian(kind):
    with pytest.raises(LayerSetupError, match="sparsity"):
        make_filled(FP(type=kind, sparse=2), (2, 2, 3, 3))


def test_positive_unitball_rows_sum_to_one():
    x = _filled((7, 3, 4, 5), type="positive_unitball")
    assert (x >= 0).all() and (x <= 1).all()
    np.testing.assert_allclose(x.reshape(7, -1).sum(1), 1.0, rtol=1e-5)


# Caffe: fan_in = count / shape(0); fan_out = count / shape(1), or count for a 1-D blob
@pytest.mark.parametrize("shape, fan_in, fan_out", [
    ((40, 20, 3, 3), 180, 360),
    ((30, 500), 500, 30),
    ((2000,), 1, 2000),
])
@pytest.mark.parametrize("norm", ["FAN_IN", "FAN_OUT", "AVERAGE"])
def test_xavier_and_msra_fans(shape, fan_in, fan_out, norm):
    n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm]
    vn = getattr(FP, norm)
    x = _filled(shape, type="xavier", variance_norm=vn)
    bound = math.sqrt(3.0 / n)
    assert np.abs(x).max() <= bound * (1 + 1e-6)
    assert np.abs(x).max() > 0.95 * bound
    assert abs(x.var() * n - 1.0) < 0.1  # U(-a, a) has variance a^2 / 3 = 1 / n
    y = _filled(shape, type="msra", variance_norm=vn)
    assert abs(y.mean()) < 0.1 * math.sqrt(2.0 / n)
    assert abs(y.std() / math.sqrt(2.0 / n) - 1.0) < 0.08


def _bilinear_reference(k: int) -> np.ndarray:
    """The classic FCN upsampling kernel: 1 - |i - center| / factor per axis."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    tri = 1 - np.abs(np.arange(k) - center) / factor
    return np.outer(tri, tri)


def test_bilinear_4x4_exact():
    x = make_filled(FP(type="bilinear"), (3, 2, 4, 4)).numpy()
    expected = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_array_equal(expected, _bilinear_reference(4))
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(x[i, j], expected.astype(np.float32))


def test_bilinear_odd_size_is_symmetric():
    # BVLC master's centre (K - 1) / (2 f), not the old asymmetric (2 f - 1 - f % 2) / (2 f)
    np.testing.assert_array_equal(make_filled(FP(type="bilinear"), (1, 1, 3, 3))[0, 0].numpy(),
                                  [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    for k in (5, 6, 7, 8):
        np.testing.assert_allclose(make_filled(FP(type="bilinear"), (1, 1, k, k))[0, 0].numpy(),
                                   _bilinear_reference(k), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 3, 4)])
def test_bilinear_needs_square_4d(shape):
    with pytest.raises(LayerSetupError, match="bilinear"):
        make_filled(FP(type="bilinear"), shape)


@pytest.mark.parametrize("param, match", [
    (FP(type="nonsense"), "Unknown filler type 'nonsense'"),
    (FP(type="uniform", min=1, max=0), "min"),
    (FP(type="gaussian", std=-1), "std"),
])
def test_bad_parameters(param, match):
    with pytest.raises(LayerSetupError, match=match):
        make_filled(param, (2, 3))


def test_seed_reproducible_and_fill_matches_blob_dtype():
    caffe.set_random_seed(7)
    a = _filled((5, 6), type="gaussian", std=1.0)
    caffe.set_random_seed(7)
    b = Blob(5, 6, dtype=torch.float64)
    fill(b, FP(type="gaussian", std=1.0))
    assert b.tensor.dtype == torch.float64
    np.testing.assert_array_equal(a, b.data)
    assert not np.array_equal(a, _filled((5, 6), type="gaussian", std=1.0))


def test_empty_blob():
    assert make_filled(FP(type="xavier"), (0, 3)).shape == (0, 3)
