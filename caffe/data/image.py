"""Images as Caffe (built with OpenCV) sees them, decoded with Pillow: ``HxWxC`` uint8 arrays
in BGR(A) channel order.

Colour modes follow OpenCV's imread flags: ``color=True`` gives 3 channels (grey images
replicated, alpha dropped), ``color=False`` 1 grey channel (a JPEG is decoded straight to its
luma, as libjpeg does for OpenCV), ``color=None`` the file's own channels (1 grey, 3 BGR, 4
BGRA when it has alpha). 16-bit images are reduced to 8 bits. :func:`resize` is OpenCV's
bilinear ``cv::resize`` (half-pixel centres, no antialiasing)."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from caffe.errors import FileFormatError

_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "bmp": "BMP",
            "tif": "TIFF", "tiff": "TIFF", "webp": "WEBP", "ppm": "PPM", "pgm": "PPM",
            "pbm": "PPM"}
#: the formats decoded: those OpenCV reads for Caffe. Others are refused, EPS above all (Pillow
#: runs Ghostscript on it, so an "image" from a database or list could run a program)
DECODE_FORMATS = ("BMP", "DIB", "GIF", "JPEG", "JPEG2000", "PNG", "PPM", "SUN", "TIFF", "WEBP")
#: images up to this many pixels are always decoded; larger ones need at least one byte per
#: _PIXELS_PER_BYTE pixels (a file claiming more is corrupt or a decompression bomb)
_PIXELS_FREE = 1 << 23
_PIXELS_PER_BYTE = 8192
_GREY = {"1", "L", "I", "F"}
_ALPHA = {"LA", "La", "RGBA", "RGBa", "PA"}


def _to_8bit(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 256.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    return im


def _raw(im: Image.Image, mode: str, rawmode: str) -> np.ndarray:
    """The pixels in OpenCV's channel order, converted by Pillow in one pass."""
    im = im if im.mode == mode else im.convert(mode)
    return np.frombuffer(im.tobytes("raw", rawmode), np.uint8).reshape(
        im.size[1], im.size[0], len(rawmode))


def _array(im: Image.Image, color: bool | None) -> np.ndarray:
    im = _to_8bit(im)
    native_grey = im.mode in _GREY
    alpha = im.mode in _ALPHA or (im.mode == "P" and "transparency" in im.info)
    if color is False or (color is None and native_grey):
        return _raw(im, "L", "L")
    if color is None and alpha:
        return _raw(im, "RGBA", "BGRA")
    return _raw(im, "RGB", "BGR")


def decode_image(data: bytes, color: bool | None = True, where: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) to ``HxWxC`` uint8 BGR(A)."""
    try:
        with Image.open(io.BytesIO(data), formats=DECODE_FORMATS) as im:
            if color is False and im.format == "JPEG":
                im.draft("L", im.size)
            w, h = im.size
            if w * h > _PIXELS_FREE + _PIXELS_PER_BYTE * len(data):
                raise FileFormatError(
                    f"{where}: a {len(data)}-byte image claims {w} x {h} pixels, more than any "
                    "compression gives; refusing to decode it")
            im.load()
            return _array(im, color)
    except FileFormatError:
        raise
    except Exception as e:  # Pillow raises many types for corrupt input
        raise FileFormatError(f"{where}: cannot decode the image ({len(data)} bytes): "
                              f"{type(e).__name__}: {e}") from None


def read_image(path: str, height: int = 0, width: int = 0, color: bool | None = True,
               where: str | None = None) -> np.ndarray:
    """Caffe's ReadImageToCVMat: read ``path``, then resize to ``height x width`` when both are
    positive. ``where`` says where the path came from (for errors)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        at = f" ({where})" if where else ""
        raise FileFormatError(f"cannot read image '{path}'{at}: {e.strerror}") from None
    img = decode_image(data, color, f"image '{path}'" + (f" ({where})" if where else ""))
    if height > 0 and width > 0:
        img = resize(img, height, width)
    return img


def _linear_taps(dst: int, src: int, clamp_weights: bool):
    """OpenCV's INTER_LINEAR taps for one axis: source indices (two per output) and their
    11-bit fixed-point weights, from float32 positions ``(i + 0.5) * src / dst - 0.5``.
    Columns past an edge take the edge pixel alone (``clamp_weights``); rows keep their
    weights and read the edge row twice."""
    pos = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo.astype(np.float32)
    if clamp_weights:
        outside = (lo < 0) | (lo >= src - 1)
        frac[outside] = 0
        lo = np.clip(lo, 0, src - 1)
    w0 = np.rint((np.float32(1) - frac) * np.float32(2048)).astype(np.int64)
    w1 = np.rint(frac * np.float32(2048)).astype(np.int64)
    return np.clip(lo, 0, src - 1), np.clip(lo + 1, 0, src - 1), w0, w1


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an ``HxWxC`` uint8 image as OpenCV's ``cv::resize(INTER_LINEAR)`` does, which is
    what Caffe's ``ReadImageToCVMat`` calls: bilinear in 11-bit fixed point (a horizontal pass
    in integers, then a vertical one rounded as OpenCV's vector code rounds it), and the mean
    of each 2x2 block for an exact halving (OpenCV switches to INTER_AREA there). Equal to
    OpenCV 4's output byte for byte."""
    src_h, src_w = img.shape[:2]
    if (src_h, src_w) == (height, width):
        return img
    px = img.astype(np.int64)
    if (src_h, src_w) == (2 * height, 2 * width):
        return ((px[0::2, 0::2] + px[1::2, 0::2] + px[0::2, 1::2] + px[1::2, 1::2] + 2) >> 2
                ).astype(np.uint8)
    x0, x1, a0, a1 = _linear_taps(width, src_w, True)
    y0, y1, b0, b1 = _linear_taps(height, src_h, False)
    rows = px[:, x0] * a0[:, None] + px[:, x1] * a1[:, None]
    out = (((b0[:, None, None] * (rows[y0] >> 4)) >> 16)
           + ((b1[:, None, None] * (rows[y1] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def image_format(ext: str) -> str:
    """Pillow's format name for a file extension such as ``jpg`` or ``.png``."""
    fmt = _FORMATS.get(ext.lower().lstrip("."))
    if fmt is None:
        raise FileFormatError(f"unknown image encoding '{ext}'; use one of "
                              f"{sorted(_FORMATS)}")
    return fmt


def encode_image(img: np.ndarray, ext: str) -> bytes:
    """Encode an ``HxWxC`` uint8 BGR(A) image (C = 1, 3 or 4) as ``ext`` (jpg, png, ...),
    with OpenCV's default quality (JPEG 95)."""
    fmt = image_format(ext)
    channels = img.shape[2] if img.ndim == 3 else 1
    if channels == 1:
        im = Image.fromarray(img.reshape(img.shape[:2]), "L")
    elif channels == 3:
        im = Image.fromarray(np.ascontiguousarray(img[:, :, ::-1]), "RGB")
    elif channels == 4:
        im = Image.fromarray(np.ascontiguousarray(img[:, :, [2, 1, 0, 3]]), "RGBA")
    else:
        raise FileFormatError(f"cannot encode an image with {channels} channels")
    buf = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {"compress_level": 1} if fmt == "PNG" else {}
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def extension(path: str) -> str:
    """The lower-case extension of ``path`` without the dot ('' when none)."""
    return os.path.splitext(path)[1].lower().lstrip(".")
