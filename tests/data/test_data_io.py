"""caffe.io: the behaviours pycaffe's own test_io.py checks (written afresh), plus the
Transformer, images, oversampling and the BlobProtoVector/Datum conversions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2


def test_blobproto_legacy_shape():
    blob = caffe_pb2.BlobProto()
    blob.data.extend([0.0] * 12)
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 3, 4
    assert caffe.io.blobproto_to_array(blob).shape == (1, 1, 3, 4)


def test_blobproto_new_shape_and_round_trip():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = caffe.io.array_to_blobproto(arr, diff=arr * 2)
    assert tuple(blob.shape.dim) == (2, 3)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), arr)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), arr * 2)


def test_blobproto_without_shape_is_a_scalar():
    blob = caffe_pb2.BlobProto()
    blob.data.extend([5.0] * 4)
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(blob)
    one = caffe_pb2.BlobProto()
    one.data.append(42.0)
    assert caffe.io.blobproto_to_array(one) == 42


def test_blobprotovector_round_trip():
    arrays = [np.ones((2, 2)), np.arange(3.0)]
    s = caffe.io.arraylist_to_blobprotovector_str(arrays)
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    assert [a.shape for a in back] == [(2, 2), (3,)]
    np.testing.assert_array_equal(back[1], [0, 1, 2])


def test_datum_label_only_when_given_and_round_trips():
    with_label = caffe.io.array_to_datum(np.ones((2, 3, 4)), label=1)
    without = caffe.io.array_to_datum(np.ones((2, 3, 4)))
    assert len(with_label.SerializeToString()) > len(without.SerializeToString())
    assert not without.HasField("label")
    u8 = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = caffe.io.array_to_datum(u8, 3)
    assert d.data and not d.float_data
    np.testing.assert_array_equal(caffe.io.datum_to_array(d), u8)
    f = caffe.io.array_to_datum(u8 / 2.0)
    np.testing.assert_array_equal(caffe.io.datum_to_array(f), u8 / 2.0)
    with pytest.raises(ValueError, match="Incorrect array shape"):
        caffe.io.array_to_datum(np.ones((3, 4)))


def test_load_image_colour_and_grey(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 4, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")
    img = caffe.io.load_image(str(tmp_path / "c.png"))
    assert img.dtype == np.float32 and img.shape == (5, 4, 3)
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-6)
    grey = caffe.io.load_image(str(tmp_path / "g.png"))
    assert grey.shape == (5, 4, 3)
    np.testing.assert_allclose(grey[:, :, 2], rgb[:, :, 0] / 255.0, atol=1e-6)
    flat = caffe.io.load_image(str(tmp_path / "c.png"), color=False)
    assert flat.shape == (5, 4, 1)
    expected = rgb @ np.array([0.2125, 0.7154, 0.0721]) / 255.0
    np.testing.assert_allclose(flat[:, :, 0], expected, atol=1e-5)
    with pytest.raises(caffe.errors.FileFormatError, match="does not exist"):
        caffe.io.load_image(str(tmp_path / "none.png"))


def test_resize_image():
    im = np.random.default_rng(1).random((4, 6, 3)).astype(np.float32)
    out = caffe.io.resize_image(im, (8, 12))
    assert out.shape == (8, 12, 3) and out.dtype == np.float32
    assert out.min() >= im.min() - 1e-6 and out.max() <= im.max() + 1e-6
    const = np.full((3, 3, 5), 0.25, np.float32)
    np.testing.assert_allclose(caffe.io.resize_image(const, (7, 2)), 0.25)
    nearest = caffe.io.resize_image(np.arange(4.0).reshape(2, 2, 1), (4, 4), interp_order=0)
    np.testing.assert_array_equal(nearest[:, :, 0], [[0, 0, 1, 1]] * 2 + [[2, 2, 3, 3]] * 2)


# What pycaffe's resize_image gives (skimage 0.26 resize(mode='constant') for 1 or 3 channels,
# scipy 1.17 ndimage.zoom otherwise), computed once with those libraries.
_UPSAMPLED = [[0, 1.2, 3, 4.8, 4.8], [0.4, 2.1, 4.5, 6.9, 6.8], [1.2, 3.1, 5.5, 7.9, 7.6],
              [1.2, 2.7, 4.5, 6.3, 6]]
_DOWNSAMPLED = [[21.407354, 29.908203, 36.172485], [105.49618, 124.838486, 131.30402]]
_FOUR_CHANNELS = [[1, 11 / 3, 19 / 3, 9], [7, 29 / 3, 37 / 3, 15], [13, 47 / 3, 55 / 3, 21],
                  [19, 65 / 3, 73 / 3, 27], [25, 83 / 3, 91 / 3, 33]]


def test_resize_image_gives_pycaffes_numbers():
    # upsampled: sampled at pixel centres with zeros beyond the edges (in [0, 1] units), so
    # the borders lean towards the minimum
    up = np.array([[0, 4, 8], [2, 6, 10]], np.float32)[:, :, None]
    np.testing.assert_allclose(caffe.io.resize_image(up, (4, 5))[:, :, 0], _UPSAMPLED,
                               rtol=1e-6, atol=1e-6)
    # downsampled: skimage's Gaussian anti-aliasing first
    down = (np.arange(36, dtype=np.float32).reshape(6, 6, 1) ** 1.5)
    np.testing.assert_allclose(caffe.io.resize_image(down, (2, 3))[:, :, 0], _DOWNSAMPLED,
                               rtol=1e-6)
    # 4 channels: scipy's zoom maps corner onto corner
    four = np.arange(36, dtype=np.float32).reshape(3, 3, 4)
    np.testing.assert_allclose(caffe.io.resize_image(four, (5, 4))[:, :, 1], _FOUR_CHANNELS,
                               rtol=1e-6)


def test_resize_image_orders_above_one_use_scipy():
    im = np.random.default_rng(3).random((5, 4, 3)).astype(np.float32)
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs scipy"):
            caffe.io.resize_image(im, (9, 7), interp_order=3)
        return
    out = caffe.io.resize_image(im, (9, 7), interp_order=3)
    assert out.shape == (9, 7, 3) and out.dtype == np.float32
    assert im.min() <= out.min() and out.max() <= im.max()  # clipped to the input's range
    with pytest.raises(ValueError, match="from 0 to 5"):
        caffe.io.resize_image(im, (9, 7), interp_order=6)


def test_oversample_corners_centre_and_mirrors():
    im = np.arange(5 * 6, dtype=np.float32).reshape(5, 6, 1)
    crops = caffe.io.oversample([im, im + 100], (3, 4))
    assert crops.shape == (20, 3, 4, 1)
    boxes = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]
    for j, (t, left) in enumerate(boxes):
        np.testing.assert_array_equal(crops[j], im[t:t + 3, left:left + 4])
        np.testing.assert_array_equal(crops[5 + j], im[t:t + 3, left:left + 4][:, ::-1])
    np.testing.assert_array_equal(crops[10], im[:3, :4] + 100)


def test_transformer_preprocess_and_deprocess():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    im = np.random.default_rng(2).random((4, 5, 3)).astype(np.float32)
    before = im.copy()
    x = t.preprocess("data", im)
    np.testing.assert_array_equal(im, before)  # the caller's image is left alone
    expected = (im.transpose(2, 0, 1)[::-1] * 255 - np.array([10, 20, 30])[:, None, None]) * .5
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(t.deprocess("data", x[None]), im, atol=1e-5)
    assert t.preprocess("data", np.zeros((8, 10, 3))).shape == (3, 4, 5)  # resized


def test_transformer_checks():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(KeyError, match="'x' is not one of the net inputs"):
        t.set_raw_scale("x", 1)
    with pytest.raises(ValueError, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(ValueError, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        t.set_mean("data", np.zeros(2))
    with pytest.raises(ValueError, match="Mean shape incompatible"):
        t.set_mean("data", np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="Mean shape incompatible"):
        t.set_mean("data", np.zeros((4, 5)))  # a 2-D mean is one channel's
    t.set_mean("data", np.zeros((3, 4, 5)))
    grey = caffe.io.Transformer({"g": (1, 1, 4, 5)})
    grey.set_transpose("g", (2, 0, 1))
    grey.set_mean("g", np.ones((4, 5)))
    np.testing.assert_array_equal(grey.preprocess("g", np.ones((4, 5, 1))), np.zeros((1, 4, 5)))
