"""DataTransformer: Caffe's order (crop at an offset, mirror, subtract the mean taken at the
same source pixels, scale), centre crops in TEST, and image decoding conventions."""

from __future__ import annotations

import numpy as np
import pytest

from caffe.data.image import decode_image, encode_image, resize
from caffe.data.transformer import DataTransformer
from caffe.errors import FileFormatError
from caffe.layer import Phase
from caffe.proto import caffe_pb2

from layer_rows.data import bilinear, png_bytes

IMG = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)


def _t(phase=Phase.TRAIN, **kw):
    return DataTransformer(caffe_pb2.TransformationParameter(**kw), phase)


def test_train_crop_offsets_and_mirror_come_from_the_uniforms():
    t = _t(crop_size=3, mirror=True)
    u = np.array([0.7, 0.99, 0.4])  # no mirror; h_off = floor(0.99 * 3) = 2; w_off = 1
    np.testing.assert_array_equal(t(IMG, u), IMG[:, 2:5, 1:4])
    u = np.array([0.2, 0.0, 0.0])  # mirror
    np.testing.assert_array_equal(t(IMG, u), IMG[:, 0:3, 0:3][:, :, ::-1])


def test_test_phase_centre_crop_rounds_down():
    t = _t(Phase.TEST, crop_size=2)
    np.testing.assert_array_equal(t(IMG, np.zeros(3)), IMG[:, 1:3, 2:4])


def test_mean_file_is_cropped_at_the_source_position_and_mirrored_with_it(tmp_path):
    mean = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)
    bp = caffe_pb2.BlobProto(num=1, channels=2, height=5, width=6)
    bp.data.extend(mean.ravel().tolist())
    (tmp_path / "m.binaryproto").write_bytes(bp.SerializeToString())
    t = _t(crop_size=3, mirror=True, scale=0.5, mean_file=str(tmp_path / "m.binaryproto"))
    u = np.array([0.1, 0.5, 0.9])  # mirror, h_off 1, w_off 3
    expected = ((IMG[:, 1:4, 3:6] - mean[:, 1:4, 3:6]) * np.float32(0.5))[:, :, ::-1]
    np.testing.assert_array_equal(t(IMG, u), expected)


@pytest.mark.parametrize("values", [[5.0], [5.0, 7.0]])
def test_mean_values_one_or_per_channel(values):
    t = _t(mean_value=values, scale=2.0)
    expected = (IMG.astype(np.float32) - np.resize(values, 2)[:, None, None]) * 2
    np.testing.assert_array_equal(t(IMG), expected)


def test_float_images_and_scale_only():
    x = np.random.default_rng(1).standard_normal((3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(_t(scale=0.25)(x), x * np.float32(0.25))


def test_mismatched_mean_file_names_it(tmp_path):
    bp = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=3)
    bp.data.extend([0.0] * 18)
    (tmp_path / "m.binaryproto").write_bytes(bp.SerializeToString())
    t = _t(crop_size=3, mean_file=str(tmp_path / "m.binaryproto"))
    with pytest.raises(FileFormatError, match=r"m.binaryproto' has shape \(2, 3, 3\)"):
        t(IMG, np.zeros(3), "record 7")


def test_decoding_follows_opencv_channel_conventions():
    rgba = np.random.default_rng(2).integers(0, 256, (4, 5, 4)).astype(np.uint8)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    native = decode_image(buf.getvalue(), None)
    np.testing.assert_array_equal(native, rgba[:, :, [2, 1, 0, 3]])  # BGRA
    colour = decode_image(buf.getvalue(), True)
    np.testing.assert_array_equal(colour, rgba[:, :, [2, 1, 0]])
    grey = np.full((3, 3, 1), 77, np.uint8)
    assert decode_image(png_bytes(grey), None).shape == (3, 3, 1)
    assert decode_image(png_bytes(grey), True).shape == (3, 3, 3)
    with pytest.raises(FileFormatError, match="record 3: cannot decode the image"):
        decode_image(b"nonsense", True, "record 3")


def test_encode_decode_round_trip_and_resize():
    img = np.random.default_rng(4).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(encode_image(img, "png")), img)
    small = resize(img, 3, 4)
    assert np.abs(small.astype(int) - bilinear(img, 3, 4)).max() <= 1
    big = resize(img, 11, 13)
    assert np.abs(big.astype(int) - bilinear(img, 11, 13)).max() <= 1
    with pytest.raises(FileFormatError, match="unknown image encoding 'xyz'"):
        encode_image(img, "xyz")
