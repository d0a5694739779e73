"""caffe.coord_map: coordinate maps through conv / pool / deconv / crop / element-wise layers,
crop offsets for FCN-style nets, and the errors for unmappable or uncroppable tops."""

from __future__ import annotations

import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.coord_map import (
    AxisMismatchException,
    compose,
    coord_map,
    coord_map_from_to,
    crop,
    inverse,
)
from caffe.errors import CaffeError


def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0) -> caffe.NetSpec:
    """data -> conv -> max pool -> deconv (kernel twice its stride), plus a second input."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 60, 60]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    dks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    n.deconv = L.Deconvolution(n.pool, num_output=3, kernel_size=dks, stride=dstride, pad=dpad)
    return n


def test_matched_pool_and_deconv_strides():
    n = conv_pool_deconv()
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, 0)
    n = conv_pool_deconv(pool=4, dstride=4)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, -1)


def test_elementwise_and_1x1_conv_keep_the_map():
    n = conv_pool_deconv()
    base = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.clip = L.Clip(n.relu, min=0, max=1)
    n.conv1x1 = L.Convolution(n.clip, num_output=3, kernel_size=1, stride=1, pad=0)
    for top in (n.relu, n.clip, n.conv1x1):
        assert coord_map_from_to(top, n.data) == base


@pytest.mark.parametrize("pad", [1, 4, 7])
def test_conv_pad_shifts_one_way_and_deconv_pad_the_other(pad):
    n = conv_pool_deconv()
    _, a, b = coord_map_from_to(n.deconv, n.data)
    n = conv_pool_deconv(pad=pad)
    assert coord_map_from_to(n.deconv, n.data)[1:] == (a, b - pad)
    n = conv_pool_deconv(dpad=pad)
    assert coord_map_from_to(n.deconv, n.data)[1:] == (a, b + pad)
    n = conv_pool_deconv(pad=pad, dpad=pad)
    assert coord_map_from_to(n.deconv, n.data)[1:] == (a, b)


def test_every_bottom_of_a_layer_maps_alike():
    n = conv_pool_deconv()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=3, kernel_size=5,
                                            stride=2, pad=0)
    assert coord_map_from_to(n.conv_data, n.data) == coord_map_from_to(n.conv_aux, n.aux)


def test_anisotropic_map_is_per_axis():
    square3 = conv_pool_deconv(ks=3, stride=1, pad=0)
    square5 = conv_pool_deconv(ks=5, stride=2, pad=10)
    rect = conv_pool_deconv(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    ax3, a3, b3 = coord_map_from_to(square3.deconv, square3.data)
    ax5, a5, b5 = coord_map_from_to(square5.deconv, square5.data)
    ax, a, b = coord_map_from_to(rect.deconv, rect.data)
    assert ax3 == ax5 == ax == 1
    assert (a[0], b[0]) == (a3, b3) and (a[1], b[1]) == (a5, b5)


def test_three_spatial_axes():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=[3, 3, 3], stride=[1, 1, 1],
                           pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=2, kernel_size=4, stride=2, pad=0)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and len(a) == len(b) == 3
    assert np.all(a == 1)
    assert b[0] - 1 == b[1] and b[1] - 1 == b[2]


@pytest.mark.parametrize("offset", [0, 3, 10])
def test_map_through_a_crop_layer(offset):
    n = conv_pool_deconv()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    assert coord_map_from_to(n.crop, n.data) == (ax, a, b + offset)


def test_dilation_and_convolution_param_dict():
    plain = L.Convolution(L.Input(shape=dict(dim=[1])), num_output=1, kernel_size=5)
    dilated = L.Convolution(L.Input(shape=dict(dim=[1])),
                            convolution_param=dict(num_output=1, kernel_size=3, dilation=2))
    assert coord_map(plain.fn) == coord_map(dilated.fn)  # both span 5 pixels


def test_crop_helper_builds_an_fcn_crop_that_runs():
    n = conv_pool_deconv(pad=6)  # padding makes the upsampled output larger than the input
    n.score = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and list(layer.bottom) == ["deconv", "data"]
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [6]
    net = caffe.Net(n.to_proto(), caffe.TEST)
    assert net.blobs["deconv"].shape == (2, 3, 72, 72)  # 60 + 2*6 - 2, /2, *2 + 2
    assert net.blobs["score"].shape == net.blobs["data"].shape[:1] + (3, 60, 60)


def test_unconnected_tops():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="Could not compute the map") as e:
        coord_map_from_to(n.ip, n.data)
    assert isinstance(e.value, CaffeError)


def test_scale_mismatch_cannot_be_cropped():
    n = conv_pool_deconv(pool=3, dstride=2)
    with pytest.raises(AssertionError, match="scale mismatch"):
        crop(n.deconv, n.data)


def test_negative_offset_cannot_be_cropped():
    n = conv_pool_deconv(dpad=10)
    with pytest.raises(AssertionError, match="negative offset") as e:
        crop(n.deconv, n.data)
    assert isinstance(e.value, CaffeError)


def test_legacy_hw_params_are_refused():
    conv = L.Convolution(L.Input(shape=dict(dim=[1])), num_output=1, kernel_h=3, kernel_w=3)
    with pytest.raises(AssertionError, match="legacy _h/_w"):
        coord_map(conv.fn)


def test_compose_and_inverse():
    assert compose((None, 1, 0), (2, 0.5, 1)) == (2, 0.5, 1)
    assert compose((2, 2, 1), (None, 1, 0)) == (2, 2, 1)
    assert compose((1, 2, 1), (1, 3, 4)) == (1, 6, 9)
    assert inverse((1, 2.0, 4.0)) == (1, 0.5, -2.0)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))
