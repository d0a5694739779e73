"""pycaffe's ``caffe.io``: conversions between NumPy arrays and Caffe's protobuf messages
(BlobProto, Datum), image loading and resizing, oversampling, and :class:`Transformer`, which
turns ``H x W x K`` images into net inputs and back.

Images from :func:`load_image` are float32 RGB in [0, 1], as skimage gives them to pycaffe;
``Transformer.set_channel_swap(name, (2, 1, 0))`` and ``set_raw_scale(name, 255)`` convert them
to the BGR [0, 255] inputs of Caffe's reference models."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from caffe.data.datum import chw_to_datum, datum_to_chw
from caffe.data.image import DECODE_FORMATS
from caffe.errors import FileFormatError
from caffe.model_io import has_legacy_shape
from caffe.proto import caffe_pb2, files

__all__ = [
    "Transformer",
    "array_to_blobproto",
    "array_to_datum",
    "arraylist_to_blobprotovector_str",
    "blobproto_to_array",
    "blobprotovector_str_to_arraylist",
    "datum_to_array",
    "load_image",
    "oversample",
    "resize_image",
]


# ---------------------------------------------------------------------------- protobuf
def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """The blob's data (or diff) as a float64 array, as pycaffe returns it, shaped by its
    legacy num/channels/height/width when any is set, else by its ``shape`` (no shape gives a
    scalar, so only one value fits)."""
    values = (blob.double_diff or blob.diff) if return_diff else (blob.double_data or blob.data)
    data = np.array(values, dtype=np.float64)
    if has_legacy_shape(blob):
        shape: tuple[int, ...] = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if any(d < 0 for d in shape) or data.size != math.prod(shape):
        raise FileFormatError(
            f"BlobProto holds {data.size} values but its shape is {shape}")
    try:
        return data.reshape(shape)
    except ValueError as e:  # an empty blob whose other dimensions overflow
        raise FileFormatError(f"BlobProto shape {shape} is invalid: {e}") from None


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """A BlobProto with ``arr``'s shape and values (and ``diff`` when given)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float64).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff, dtype=np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist: Iterable[np.ndarray]) -> bytes:
    """A serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(s: bytes) -> list[np.ndarray]:
    """The arrays of a serialized BlobProtoVector."""
    vec = files.parse_binary(s, caffe_pb2.BlobProtoVector(), "<BlobProtoVector string>")
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr: np.ndarray, label: int | None = None) -> caffe_pb2.Datum:
    """A Datum from a ``C x H x W`` array: uint8 goes to ``data``, anything else to
    ``float_data``. The label is only set when given."""
    if np.ndim(arr) != 3:
        raise ValueError(f"Incorrect array shape: a Datum holds a (channels, height, width) "
                         f"array, got shape {np.shape(arr)}")
    return chw_to_datum(arr, label)


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """A raw Datum's pixels as ``C x H x W`` (uint8 from ``data``, else float from
    ``float_data``); an encoded Datum is decoded to BGR uint8."""
    arr = datum_to_chw(datum, "Datum")
    return np.array(arr, dtype=np.uint8 if arr.dtype == np.uint8 else np.float64)


# ---------------------------------------------------------------------------- images
def load_image(filename: str, color: bool = True) -> np.ndarray:
    """An image file as float32 ``H x W x 3`` RGB (``H x W x 1`` grey when ``color`` is
    False) with values in [0, 1]. Alpha is dropped; grey images are repeated to 3 channels in
    colour mode; colour images become grey with the Rec. 709 luma weights (as skimage)."""
    try:
        with Image.open(filename, formats=DECODE_FORMATS) as im:
            im.load()
            if im.mode.startswith("I;16") or im.mode == "I":
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                arr = arr[:, :, None]
            elif im.mode in ("1", "L", "F"):
                arr = np.asarray(im.convert("L"), dtype=np.float32)[:, :, None] / 255.0
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise FileFormatError(f"image file '{filename}' does not exist") from None
    except Exception as e:
        raise FileFormatError(f"cannot read image '{filename}': {type(e).__name__}: {e}"
                              ) from None
    if color and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif not color and arr.shape[2] == 3:
        weights = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
        arr = (arr @ weights)[:, :, None]
    return np.ascontiguousarray(arr, dtype=np.float32)


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Resize an ``H x W x K`` image to ``new_dims`` (height, width) as pycaffe does; returns
    float32. ``interp_order`` is the spline order: 0 nearest, 1 bilinear (computed here),
    2 to 5 (through ``scipy.ndimage``, which must be installed).

    With 1 or 3 channels pycaffe maps the image to [0, 1] by its min and max, resizes it with
    skimage's ``resize(..., mode='constant')`` and maps it back (a constant image stays that
    constant): when shrinking an axis by a factor f, a Gaussian blur of sigma (f - 1) / 2
    first (skimage's anti-aliasing); then sampling at the output pixel centres, ``(o + 0.5)
    * in / out - 0.5``, with zeros beyond the edges (so upsampled borders lean towards the
    minimum); then clipping to the input's range. With other channel counts pycaffe zooms with
    ``scipy.ndimage.zoom``, which maps the corner pixels onto each other and blurs nothing."""
    if interp_order not in range(6):
        raise ValueError(f"interp_order must be a spline order from 0 to 5, got {interp_order}")
    im = np.asarray(im)
    if im.ndim != 3:
        raise ValueError(f"resize_image takes an H x W x K image, got shape {im.shape}")
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.shape[-1] not in (1, 3):
        scale = np.array((h, w), dtype=float) / np.array(im.shape[:2])
        out_shape = tuple(int(round(n * z)) for n, z in zip(im.shape[:2], scale))
        return _zoom(_floating(im), out_shape, interp_order, (0.0, 0.0), grid=False
                     ).astype(np.float32)
    lo, hi = im.min(), im.max()
    if not hi > lo:
        return np.full((h, w, im.shape[-1]), lo, dtype=np.float32)
    std = _floating((im - lo) / (hi - lo))
    factors = np.array(std.shape[:2]) / np.array((h, w))
    sigmas = np.maximum(0, (factors - 1) / 2) if (factors > 1).any() else (0.0, 0.0)
    out = np.clip(_zoom(std, (h, w), interp_order, sigmas, grid=True), std.min(), std.max())
    return (out * (hi - lo) + lo).astype(np.float32)


def _floating(a: np.ndarray) -> np.ndarray:
    """``a`` as float32 if it is float32, else as float64 (the dtype skimage computes in)."""
    return a if a.dtype == np.float32 else a.astype(np.float64)


def _zoom(a: np.ndarray, out_hw: tuple[int, int], order: int, sigmas: Sequence[float],
          grid: bool) -> np.ndarray:
    """``a`` (H, W, K) blurred along H and W by Gaussians of ``sigmas`` (0: none), then
    resampled to ``out_hw`` with splines of ``order``, as ``scipy.ndimage.gaussian_filter``
    and ``zoom`` with ``grid_mode=grid`` compute it: with it, samples at the output pixel
    centres and zeros beyond the edges ('grid-constant'); without, corner onto corner. For
    orders 0 and 1 the blur is computed only at the rows and columns the samples read (a
    photo shrunk to a net's input reads a few hundred of thousands), each axis's pass stored
    in ``a``'s dtype as scipy stores it; the samples are then combined in float64."""
    if order > 1:
        try:
            from scipy import ndimage
        except ImportError:
            raise ValueError(f"resize_image with interp_order {order} needs scipy (pip install "
                             "scipy); orders 0 and 1 do not") from None
        for axis, sigma in enumerate(sigmas):
            a = _blur_at(a, axis, sigma, np.arange(a.shape[axis]))
        factors = (out_hw[0] / a.shape[0], out_hw[1] / a.shape[1], 1)
        return ndimage.zoom(a, factors, order=order, grid_mode=grid,
                            mode="grid-constant" if grid else "constant")
    reads = []
    for axis, (sigma, n_out) in enumerate(zip(sigmas, out_hw)):
        n_in = a.shape[axis]
        index, weight = _taps(_sample_coords(n_in, n_out, grid), order)
        inside = (index >= 0) & (index < n_in)
        needed = np.unique(index[inside])
        a = _blur_at(a, axis, sigma, needed)
        # where each tap reads in the reduced axis; a tap beyond the edges reads a zero
        reads.append((np.where(inside, np.searchsorted(needed, index), len(needed)), weight))
    out = a.astype(np.float64)
    for axis, (pos, weight) in enumerate(reads):
        zero = np.zeros_like(out.take([0], axis=axis))
        picked = np.concatenate([out, zero], axis=axis).take(pos, axis=axis)
        shape = [1] * out.ndim
        shape[axis:axis + 1] = weight.shape
        out = (picked * weight.reshape(shape)).sum(axis=axis + 1)
    return out.astype(a.dtype)


def _sample_coords(n_in: int, n_out: int, grid: bool) -> np.ndarray:
    """Where the ``n_out`` output samples lie on the input axis (see ``_zoom``)."""
    o = np.arange(n_out, dtype=np.float64)
    if grid:
        return (o + 0.5) * (n_in / n_out) - 0.5
    return np.clip(o * ((n_in - 1) / (n_out - 1) if n_out > 1 else 1.0), 0, n_in - 1)


def _taps(coords: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(input indices, weights), each (n_out, taps): order 0 the nearest sample (ties round
    up), order 1 the two around each point with linear weights."""
    if order == 0:
        return np.floor(coords + 0.5).astype(np.intp)[:, None], np.ones((len(coords), 1))
    left = np.floor(coords)
    t = coords - left
    left = left.astype(np.intp)
    return np.stack([left, left + 1], 1), np.stack([1 - t, t], 1)


def _blur_at(a: np.ndarray, axis: int, sigma: float, index: np.ndarray) -> np.ndarray:
    """``a`` blurred along ``axis`` by a Gaussian of ``sigma`` with zeros beyond the edges, at
    the positions ``index`` only (computed in float64, stored in ``a``'s dtype); the kernel
    reaches ``int(4 sigma + 0.5)`` pixels (scipy.ndimage.gaussian_filter's truncation)."""
    if sigma <= 1e-15:
        return a.take(index, axis=axis)
    r = int(4.0 * sigma + 0.5)
    k = np.arange(-r, r + 1)
    weights = np.exp(-0.5 / (sigma * sigma) * k * k)
    weights /= weights.sum()
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    padded = np.pad(a.astype(np.float64), pad)
    acc = np.zeros(a.take(index, axis=axis).shape, dtype=np.float64)
    for j, wj in enumerate(weights):  # a loop over the kernel's taps
        acc += wj * padded.take(index + j, axis=axis)
    return acc.astype(a.dtype)


def oversample(images: Sequence[np.ndarray], crop_dims: Sequence[int]) -> np.ndarray:
    """Ten crops per ``H x W x K`` image: the four corners and the centre, then the same five
    mirrored left-right; returns ``(10 * N, crop_h, crop_w, K)`` float32."""
    images = [np.asarray(im) for im in images]
    ih, iw, k = images[0].shape
    ch, cw = int(crop_dims[0]), int(crop_dims[1])
    boxes = [(top, left) for top in (0, ih - ch) for left in (0, iw - cw)]
    boxes.append((int(ih / 2.0 - ch / 2.0), int(iw / 2.0 - cw / 2.0)))
    crops = np.empty((10 * len(images), ch, cw, k), dtype=np.float32)
    for n, im in enumerate(images):
        for j, (top, left) in enumerate(boxes):
            crop = im[top:top + ch, left:left + cw, :]
            crops[10 * n + j] = crop
            crops[10 * n + 5 + j] = crop[:, ::-1, :]
    return crops


# ---------------------------------------------------------------------------- Transformer
class Transformer:
    """Preprocessing for net inputs. ``inputs`` maps input names to their blob shapes
    ``(N, C, H, W)``. ``preprocess`` applies, in order: resize to ``(H, W)``, transpose,
    channel swap, raw scale, mean subtraction, input scale; ``deprocess`` undoes them (except
    the resize)."""

    def __init__(self, inputs: dict[str, Sequence[int]]) -> None:
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, name: str) -> None:
        if name not in self.inputs:
            raise KeyError(f"'{name}' is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """An ``H' x W' x K`` image (any size) as a ``K x H x W`` float32 net input."""
        self._check_input(in_)
        x = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if x.shape[:2] != in_dims:
            x = resize_image(x, in_dims)
        if in_ in self.transpose:
            x = x.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            x = x[list(self.channel_swap[in_]), :, :]
        x = np.array(x, dtype=np.float32)
        if in_ in self.raw_scale:
            x *= self.raw_scale[in_]
        if in_ in self.mean:
            x -= self.mean[in_]
        if in_ in self.input_scale:
            x *= self.input_scale[in_]
        return x

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Undo ``preprocess`` (but not its resize) on one net input (leading 1 dims are
        squeezed)."""
        self._check_input(in_)
        x = np.array(data).squeeze()  # a copy, computed in place in its dtype (as pycaffe)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        if in_ in self.input_scale:
            x /= self.input_scale[in_]
        if in_ in self.mean:
            x += self.mean[in_]
        if in_ in self.raw_scale:
            x /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            x = x[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            x = x.transpose(np.argsort(self.transpose[in_]))
        return x

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Axis order to go from the image's ``H x W x K`` to the net's ``K x H x W``, e.g.
        ``(2, 0, 1)``."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError(f"Transpose order {tuple(order)} needs {len(self.inputs[in_]) - 1}"
                             f" axes, as the input '{in_}' {self.inputs[in_]} without its batch"
                             " axis")
        self.transpose[in_] = tuple(int(i) for i in order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Reorder channels after transposing, e.g. ``(2, 1, 0)`` for RGB to BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError(f"Channel swap {tuple(order)} needs {self.inputs[in_][1]} entries,"
                             f" one per channel of input '{in_}'")
        self.channel_swap[in_] = tuple(int(i) for i in order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply by ``scale`` before subtracting the mean (e.g. 255 for [0, 1] images)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """The mean to subtract: one value per channel (shape ``(K,)``) or an image (``K x H x
        W`` or ``H x W``) of the input's size."""
        self._check_input(in_)
        mean = np.asarray(mean)
        shape = self.inputs[in_]
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise ValueError(f"Mean channels incompatible with input: {mean.shape[0]} values"
                                 f" for {shape[1]} channels")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = (1,) + mean.shape if mean.ndim == 2 else mean.shape
            if len(ms) != 3:
                raise ValueError(f"Mean shape invalid: {mean.shape}")
            if ms != shape[1:]:
                raise ValueError(f"Mean shape incompatible with input shape: mean {mean.shape},"
                                 f" input {shape[1:]}")
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply by ``scale`` after subtracting the mean."""
        self._check_input(in_)
        self.input_scale[in_] = scale


def net_input_transformer(net, mean=None, input_scale=None, raw_scale=None,
                          channel_swap=None) -> Transformer:
    """A Transformer for ``net``'s first input taking H x W x K images (pycaffe's Classifier
    and Detector set-up): transpose to K x H x W, then the optional mean, scales and channel
    swap."""
    name = net.inputs[0]
    t = Transformer({name: net.blobs[name].data.shape})
    t.set_transpose(name, (2, 0, 1))
    if mean is not None:
        t.set_mean(name, mean)
    if input_scale is not None:
        t.set_input_scale(name, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(name, channel_swap)
    return t
