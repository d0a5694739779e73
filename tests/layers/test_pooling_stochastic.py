"""Pooling with pool: STOCHASTIC. TRAIN samples one element per window with probability
proportional to its activation (checked statistically over many windows and seeds); TEST
returns the activation-weighted mean sum(x^2) / sum(x)."""

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

VALUES = np.array([1.0, 2.0, 3.0, 4.0])
# chi-square critical value, 3 degrees of freedom, p = 0.001
CHI2_3DF_999 = 16.27


def _layer(phase: Phase, param: str = "pool: STOCHASTIC kernel_size: 2 stride: 2"):
    lp = caffe_pb2.LayerParameter(name="sto", type="Pooling")
    text_format.Merge(f"pooling_param {{ {param} }}", lp)
    return create_layer(lp, phase)


def _run(layer, x: np.ndarray):
    bottom, top = Blob(*x.shape), Blob()
    bottom.data[...] = x
    layer.SetUp([bottom], [top])
    layer.Forward([bottom], [top])
    return bottom, top


def _tiled_windows(n_windows: int, rng: np.random.Generator) -> np.ndarray:
    """(1, 1, 2, 2 * n_windows): every 2x2 window holds 1, 2, 3, 4 in a random order."""
    perms = np.stack([rng.permutation(VALUES) for _ in range(n_windows)])
    return perms.reshape(n_windows, 2, 2).transpose(1, 0, 2).reshape(1, 1, 2, 2 * n_windows)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_train_samples_proportionally_to_activation(seed):
    caffe.set_random_seed(seed)
    x = _tiled_windows(4000, np.random.default_rng(seed))
    _, top = _run(_layer(Phase.TRAIN), x)
    picked = top.data.reshape(-1)
    counts = np.array([(picked == v).sum() for v in VALUES])
    assert counts.sum() == picked.size  # every output is one of the window's values
    expected = picked.size * VALUES / VALUES.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < CHI2_3DF_999, (counts, expected)


def test_train_seed_reproducible_and_seeds_differ():
    x = _tiled_windows(200, np.random.default_rng(0))
    draws = []
    for seed in (5, 5, 6):
        caffe.set_random_seed(seed)
        draws.append(_run(_layer(Phase.TRAIN), x)[1].data.copy())
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_train_never_picks_zero_activation():
    x = np.zeros((1, 2, 4, 4))
    x[0, 0, ::2, ::2] = 1.0  # one non-zero per window in channel 0; channel 1 all zero
    caffe.set_random_seed(3)
    _, top = _run(_layer(Phase.TRAIN), x)
    np.testing.assert_array_equal(top.data[0, 0], 1.0)
    np.testing.assert_array_equal(top.data[0, 1], 0.0)


def test_train_backward_routes_to_the_sampled_element():
    caffe.set_random_seed(11)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 1.0, size=(2, 3, 5, 5))  # 3x3 output, clipped windows at the edge
    layer = _layer(Phase.TRAIN, "pool: STOCHASTIC kernel_size: 2 stride: 2")
    bottom, top = _run(layer, x)
    dy = rng.standard_normal(top.shape)
    top.diff[...] = dy
    layer.Backward([top], [True], [bottom])
    dx = bottom.diff.astype(np.float64)
    y = top.data
    for i in range(3):
        for j in range(3):
            win = (slice(None), slice(None), slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2))
            hit = np.isclose(x[win], y[:, :, i:i + 1, j:j + 1], rtol=0, atol=1e-7)
            assert (hit.reshape(2, 3, -1).sum(-1) == 1).all()
            np.testing.assert_allclose(dx[win][hit], dy[:, :, i, j].reshape(-1), rtol=1e-6)
            assert (dx[win][~hit] == 0).all()


def test_test_phase_weighted_mean_and_zero_windows():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, :, :2] = [[1.0, 2.0], [3.0, 4.0]]
    _, top = _run(_layer(Phase.TEST), x)
    np.testing.assert_allclose(top.data.reshape(-1), [30.0 / 10.0, 0.0], rtol=1e-6)


def test_padding_is_rejected():
    lp = "pool: STOCHASTIC kernel_size: 3 stride: 2 pad: 1"
    with pytest.raises(LayerSetupError, match="padding"):
        _run(_layer(Phase.TRAIN, lp), np.ones((1, 1, 5, 5)))


def test_float64_and_global():
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.1
    layer = _layer(Phase.TEST, "pool: STOCHASTIC global_pooling: true")
    bottom, top = Blob(2, 3, 4, 4, dtype=torch.float64), Blob(dtype=torch.float64)
    bottom.tensor.copy_(x)
    layer.SetUp([bottom], [top])
    layer.Forward([bottom], [top])
    expected = (x * x).sum((2, 3), keepdim=True) / x.sum((2, 3), keepdim=True)
    assert top.tensor.dtype == torch.float64
    torch.testing.assert_close(top.tensor, expected)
