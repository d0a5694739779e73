"""Images as Caffe (built with OpenCV) sees them, decoded with Pillow: ``HxWxC`` uint8 arrays
in BGR(A) channel order, equal to OpenCV 4's ``imdecode`` byte for byte on the common cases.

Colour modes follow OpenCV's imread flags: ``color=True`` (``IMREAD_COLOR``) gives 3 channels
(grey images replicated, alpha dropped), ``color=False`` (``IMREAD_GRAYSCALE``) 1 grey channel,
``color=None`` (``IMREAD_UNCHANGED``) the file's own channels (1 grey, 3 BGR, 4 BGRA when it has
alpha). What OpenCV does on the way, done here too:

* grey from colour: a JPEG is decoded straight to its luma (libjpeg); a PNG goes through
  libpng's ``rgb_to_gray`` with the weights OpenCV sets (15-bit, truncated, in linear light when
  the file declares a gamma); other formats use OpenCV's 14-bit rounded weights;
* 16-bit images keep their high byte (libpng's ``strip_16``; a 16-bit colour PNG made grey
  may be 1 off, as Pillow reads only the high bytes of its colours);
* a TIFF with unassociated alpha is premultiplied (libtiff's RGBA reader), a CMYK JPEG is
  converted with OpenCV's integer formula;
* with ``color`` True or False, the EXIF orientation (JPEG, PNG, WebP) is applied; unchanged
  images are left as stored (a TIFF's orientation tag is always applied: libtiff, for OpenCV
  and Pillow alike).

:func:`resize` is OpenCV's bilinear ``cv::resize`` (half-pixel centres, no antialiasing)."""

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


#: colour-to-grey weights (red, green, blue) and shift of OpenCV's decoders: libpng's as
#: OpenCV sets them (``png_set_rgb_to_gray(0.299, 0.587)``: truncated, blue takes the rest),
#: ``cvtColor``'s (WebP) and the older helper the other decoders call; all but libpng round
_PNG_GREY = (9797, 19234, 3737)
_CVT_GREY = (9798, 19235, 3735), 15
_OLD_GREY = (4899, 9617, 1868), 14
#: EXIF orientation -> (transpose, flip rows, flip columns), as OpenCV's ApplyExifOrientation
_ORIENT = {2: (False, False, True), 3: (False, True, True), 4: (False, True, False),
           5: (True, False, False), 6: (True, False, True), 7: (True, True, True),
           8: (True, True, False)}
_EXIF_FORMATS = ("JPEG", "PNG", "WEBP")


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grey image reduced to its high byte, as libpng's
    ``strip_16`` does for OpenCV; float images are rounded and clipped."""
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im).astype(np.int64)
        if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr >> 8
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        arr = np.clip(np.rint(np.asarray(im, np.float64)), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), "L")
    return im


def _raw(im: Image.Image, mode: str, rawmode: str) -> np.ndarray:
    """The pixels in OpenCV's channel order, converted by Pillow in one pass."""
    im = im if im.mode == mode else im.convert(mode)
    return np.frombuffer(im.tobytes("raw", rawmode), np.uint8).reshape(
        im.size[1], im.size[0], len(rawmode))


def _png_gamma(info: dict) -> int:
    """The file gamma a PNG declares (gAMA, or sRGB's 1/2.2), in libpng's 1e-5 fixed point; 0
    when none, or when libpng would reject it (beyond 31 bits)."""
    if "srgb" in info:
        return 45455
    try:
        gamma = int(np.floor(float(info.get("gamma") or 0) * 100000 + 0.5))
    except (TypeError, ValueError, OverflowError):
        return 0
    return gamma if 0 < gamma <= 2**31 - 1 else 0


def _significant(fixed: int) -> bool:
    """libpng's test: a gamma further than 5 % from 1 changes values."""
    return not 95000 <= fixed <= 105000


def _gamma_table(exponent: int) -> np.ndarray:
    """libpng's 8-bit gamma table for an exponent in 1e-5 fixed point (0 and 255 map to
    themselves; the identity when the exponent is not significant)."""
    values = np.arange(256, dtype=np.int32)
    if not _significant(exponent):
        return values
    table = np.floor(255 * (values / 255.0) ** (exponent * 1e-5) + 0.5).astype(np.int32)
    table[[0, 255]] = [0, 255]
    return table


def _reciprocal(fixed: int) -> int:
    """libpng's ``png_reciprocal``: 1/x in 1e-5 fixed point, 0 when it does not fit 32 bits."""
    if fixed == 0:
        return 0
    r = np.floor(1e10 / fixed + 0.5)
    return int(r) if -2**31 <= r <= 2**31 - 1 else 0


def _grey(rgb: np.ndarray, fmt: str | None, info: dict) -> np.ndarray:
    """An ``HxWx3`` RGB image made grey as OpenCV's decoder for ``fmt`` makes it."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))  # sums stay below 2**23
    if fmt != "PNG":
        (cr, cg, cb), shift = _CVT_GREY if fmt == "WEBP" else _OLD_GREY
        grey = (r * cr + g * cg + b * cb + (1 << (shift - 1))) >> shift
        return grey.astype(np.uint8)[..., None]
    cr, cg, cb = _PNG_GREY
    gamma = _png_gamma(info)
    screen = _reciprocal(gamma)  # libpng assumes a screen that undoes the file's gamma
    if not gamma or not (_significant(gamma) or _significant(screen)):
        return ((r * cr + g * cg + b * cb) >> 15).astype(np.uint8)[..., None]
    # libpng converts in linear light: decode with 1/gamma, mix (rounded), encode for the
    # screen; pixels with equal channels are kept as they are
    to_linear = _gamma_table(_reciprocal(gamma))
    from_linear = _gamma_table(_reciprocal(screen) if screen > 0 else gamma)
    mixed = from_linear[(to_linear[r] * cr + to_linear[g] * cg + to_linear[b] * cb + 16384)
                        >> 15]
    return np.where((r == g) & (g == b), r, mixed).astype(np.uint8)[..., None]


def _premultiplied(im: Image.Image) -> np.ndarray:
    """An RGBA TIFF with unassociated alpha as libtiff's RGBA reader gives it to OpenCV:
    colour premultiplied by alpha, rounded."""
    rgba = _raw(im, "RGBA", "BGRA").astype(np.int32)
    rgba[..., :3] = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
    return rgba.astype(np.uint8)


def _cmyk_jpeg(im: Image.Image) -> np.ndarray:
    """A CMYK JPEG as OpenCV converts libjpeg's output (the stored, Adobe-inverted values, which
    Pillow has inverted back): x = k - (255 - x) k / 256 for each of c, m, y, as BGR."""
    stored = 255 - np.asarray(im, dtype=np.int32)
    k = stored[..., 3:]
    cmy = k - (((255 - stored[..., :3]) * k) >> 8)
    return cmy[..., ::-1].astype(np.uint8)


def _array(im: Image.Image, color: bool | None) -> np.ndarray:
    fmt = im.format
    im = _to_8bit(im)
    if im.mode in _GREY or (color is False and im.mode == "LA"):
        return _raw(im, "L", "L") if color is not True else _raw(im, "RGB", "BGR")
    if fmt == "JPEG" and im.mode == "CMYK":
        bgra = _cmyk_jpeg(im)
    elif fmt == "TIFF" and im.mode == "RGBA" and im.tag_v2.get(338) in (2, (2,)):
        bgra = _premultiplied(im)
    elif color is None and (im.mode in _ALPHA or (im.mode == "P" and "transparency" in
                                                   im.info)):
        return _raw(im, "RGBA", "BGRA")
    else:
        bgra = _raw(im, "RGB", "BGR")
    if color is False:
        return _grey(bgra[..., 2::-1], fmt, im.info)
    return bgra if color is None else np.ascontiguousarray(bgra[..., :3])


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1 to 8) OpenCV reads from a JPEG, PNG or WebP; 1 when none."""
    if im.format not in _EXIF_FORMATS:
        return 1
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: OpenCV ignores it too
        return 1
    return value if value in _ORIENT else 1


def _oriented(img: np.ndarray, orientation: int) -> np.ndarray:
    if orientation not in _ORIENT:
        return img
    transpose, flip_rows, flip_cols = _ORIENT[orientation]
    if transpose:
        img = img.transpose(1, 0, 2)
    if flip_rows:
        img = img[::-1]
    if flip_cols:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


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
            img = _array(im, color)
            return img if color is None else _oriented(img, _orientation(im))
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
