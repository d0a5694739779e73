"""Decoding images as Caffe's OpenCV does (``caffe.data.image.decode_image``): colour to grey
per decoder, 16-bit images, premultiplied TIFF alpha, CMYK JPEGs, the EXIF and TIFF
orientation. Expected values were taken from OpenCV 4's ``imdecode``; one test compares with an
installed OpenCV on many more images."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from caffe.data.image import decode_image

#: four colours on which Pillow's, libpng's and OpenCV's grey weights disagree
PIXELS = np.array([[[200, 30, 90], [17, 250, 3], [232, 240, 11], [228, 205, 35]]], np.uint8)


def _encode(arr: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **options)
    return buf.getvalue()


def _png_with(arr: np.ndarray, **chunks: bytes) -> bytes:
    info = PngImagePlugin.PngInfo()
    for name, data in chunks.items():
        info.add(name.encode(), data)
    return _encode(arr, "PNG", pnginfo=info)


@pytest.mark.parametrize("fmt, options, want", [
    ("PNG", {}, [87, 152, 211, 192]),  # libpng, truncated 15-bit weights
    ("BMP", {}, [88, 152, 211, 192]),  # OpenCV's 14-bit rounded weights
    ("TIFF", {}, [88, 152, 211, 192]),
    ("PPM", {}, [88, 152, 211, 192]),
    ("WEBP", {"lossless": True}, [88, 152, 212, 193]),  # cvtColor's 15-bit rounded weights
])
def test_colour_to_grey_uses_each_decoders_weights(fmt, options, want):
    assert decode_image(_encode(PIXELS, fmt, **options), False)[..., 0].tolist() == [want]


def test_png_with_a_gamma_goes_grey_in_linear_light():
    gamma = {"gAMA": struct.pack(">I", 45455)}
    assert decode_image(_png_with(PIXELS, **gamma), False)[..., 0].tolist() == [
        [120, 197, 225, 202]]
    assert decode_image(_png_with(PIXELS, sRGB=b"\0"), False)[..., 0].tolist() == [
        [120, 197, 225, 202]]
    # colour decoding ignores the gamma, and grey pixels stay as they are
    np.testing.assert_array_equal(decode_image(_png_with(PIXELS, **gamma)), PIXELS[..., ::-1])
    flat = np.full((1, 3, 3), 77, np.uint8)
    assert decode_image(_png_with(flat, **gamma), False)[..., 0].tolist() == [[77, 77, 77]]


def test_16_bit_images_keep_their_high_byte():
    values = np.array([[0, 127, 128, 255, 256, 383, 384, 65535]], np.uint16)
    data = _encode(values, "PNG")
    assert decode_image(data, False)[..., 0].tolist() == [[0, 0, 0, 0, 1, 1, 1, 255]]
    assert decode_image(data, True)[..., 1].tolist() == [[0, 0, 0, 0, 1, 1, 1, 255]]


def test_tiff_with_unassociated_alpha_is_premultiplied():
    rgba = np.array([[[200, 30, 90, 128], [17, 250, 3, 255], [128, 129, 130, 0]]], np.uint8)
    data = _encode(rgba, "TIFF")
    assert decode_image(data, None).tolist() == [
        [[45, 15, 100, 128], [3, 250, 17, 255], [0, 0, 0, 0]]]
    assert decode_image(data, True).tolist() == [[[45, 15, 100], [3, 250, 17], [0, 0, 0]]]


def _oriented(bgr: np.ndarray, orientation: int) -> np.ndarray:
    """What each EXIF orientation asks for, written out: 5 to 8 swap rows and columns."""
    swapped = bgr.transpose(1, 0, 2)
    return {1: bgr, 2: bgr[:, ::-1], 3: bgr[::-1, ::-1], 4: bgr[::-1], 5: swapped,
            6: swapped[:, ::-1], 7: swapped[::-1, ::-1], 8: swapped[::-1]}[orientation]


RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_is_applied_unless_unchanged(fmt, orientation):
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    want = _oriented(RGB[..., ::-1], orientation)
    np.testing.assert_array_equal(decode_image(buf.getvalue(), True), want)
    assert decode_image(buf.getvalue(), False).shape[:2] == want.shape[:2]
    np.testing.assert_array_equal(decode_image(buf.getvalue(), None), RGB[..., ::-1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied_in_every_mode(orientation):
    # libtiff's RGBA reader orients the image for OpenCV and Pillow alike, unchanged or not
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, "TIFF", tiffinfo={274: orientation})
    want = _oriented(RGB[..., ::-1], orientation)
    np.testing.assert_array_equal(decode_image(buf.getvalue(), True), want)
    np.testing.assert_array_equal(decode_image(buf.getvalue(), None), want)


def test_matches_installed_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (19, 23, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (19, 23), dtype=np.uint8)
    cases = [_encode(rgb, "JPEG", quality=90), _encode(grey, "JPEG"),
             *[_png_with(rgb, gAMA=struct.pack(">I", g))  # libpng's extremes too
               for g in (1, 15, 50000, 220000, 625000001, 2**31 - 1, 2**32 - 1)],
             _encode(rng.integers(0, 65536, (19, 23), dtype=np.uint16), "PNG"),
             _encode(rng.integers(0, 256, (19, 23, 2), dtype=np.uint8), "PNG")]
    for fmt, options in [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("PPM", {}),
                         ("WEBP", {"lossless": True})]:
        cases += [_encode(rgb, fmt, **options), _encode(grey, fmt, **options)]
        if fmt in ("PNG", "TIFF", "WEBP"):
            cases.append(_encode(rgba, fmt, **options))
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, "JPEG")  # print workflows; some of ImageNet
    cases.append(cmyk.getvalue())
    for orientation in (3, 6):
        image = Image.fromarray(rgb)
        exif = image.getexif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        image.save(buf, "JPEG", exif=exif.tobytes())
        cases.append(buf.getvalue())
    palette = Image.fromarray(rgb).quantize(16)
    for extra in ({}, {"transparency": 3}):
        buf = io.BytesIO()
        palette.save(buf, "PNG", **extra)
        cases.append(buf.getvalue())
    for data in cases:
        for flag, color in [(cv2.IMREAD_COLOR, True), (cv2.IMREAD_GRAYSCALE, False),
                            (cv2.IMREAD_UNCHANGED, None)]:
            want = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
            if want.dtype != np.uint8:  # an unchanged 16-bit image: Caffe cannot use it
                continue
            got = decode_image(data, color)
            np.testing.assert_array_equal(got, want.reshape(got.shape))


def test_cmyk_jpeg_uses_opencvs_integer_formula():
    # libjpeg hands OpenCV the stored (Adobe-inverted) CMYK; each of c, m, y becomes
    # k - (255 - x) * k / 256 in integers. Pillow's own CMYK -> RGB rounds differently.
    cmyk = np.array([[[10, 200, 30, 40], [250, 5, 128, 0], [0, 0, 0, 255]]], np.uint8)
    buf = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(buf, "JPEG", quality=100)
    got = decode_image(buf.getvalue(), None)
    stored = 255 - np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.int32)
    k = stored[..., 3:]
    want = (k - (((255 - stored[..., :3]) * k) >> 8))[..., ::-1]
    np.testing.assert_array_equal(got, want)
