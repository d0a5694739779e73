"""Caffe's DataTransformer: crop, mirror, mean subtraction and scaling of one ``CxHxW``
image, in Caffe's order.

For output pixel ``(c, y, x)`` of an ``h x w`` output (``h = w = crop_size`` when cropping):
source pixel ``(c, y + h_off, x' + w_off)`` with ``x' = w - 1 - x`` when mirrored, value
``(pixel - mean) * scale``. ``mean`` is the mean file's value at the same source position (so
the mean file has the full image size) or ``mean_value[c]`` (one value for all channels, or one
per channel). Offsets: random in TRAIN, centred in TEST; mirroring is random (one coin per
image) in both phases when ``mirror`` is set, as in Caffe. ``force_color`` / ``force_gray``
choose how encoded images are decoded."""

from __future__ import annotations

import numpy as np

from caffe._common import LOG
from caffe.errors import FileFormatError, LayerSetupError
from caffe.layer import Phase
from caffe.proto import caffe_pb2, files


def load_mean_file(path: str) -> np.ndarray:
    """A binaryproto mean (``1xCxHxW`` or ``CxHxW``) as a float32 ``CxHxW`` array."""
    from caffe.io import blobproto_to_array

    bp = files.read_binary(path, caffe_pb2.BlobProto())
    try:
        arr = blobproto_to_array(bp)
    except FileFormatError as e:
        raise FileFormatError(f"mean file '{path}': {e}") from None
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise FileFormatError(
            f"mean file '{path}' holds a blob of shape {arr.shape}; a mean image has shape "
            "(1, channels, height, width)")
    return np.ascontiguousarray(arr, dtype=np.float32)


class DataTransformer:
    """Transforms single images (``CxHxW`` uint8 or float32 arrays) into float32 outputs.

    Random choices come as three uniform numbers per image (mirror coin, vertical and
    horizontal crop offsets), drawn by the caller, so that batches can be transformed in
    several threads and still follow ``caffe.set_random_seed``."""

    def __init__(self, param: caffe_pb2.TransformationParameter, phase: Phase,
                 who: str = "DataTransformer") -> None:
        self.who = who
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop_size = int(param.crop_size)
        self.phase = Phase(phase)
        if param.force_color and param.force_gray:
            raise LayerSetupError(f"{who}: transform_param cannot set both force_color and "
                                  "force_gray")
        self.color: bool | None = True if param.force_color else False if param.force_gray \
            else None
        self.mean_file = param.mean_file if param.HasField("mean_file") else ""
        if self.mean_file and len(param.mean_value):
            raise LayerSetupError(f"{who}: transform_param cannot have both mean_file and "
                                  "mean_value")
        if self.mean_file:
            LOG.info("Loading mean file from: %s", self.mean_file)
        self.mean = load_mean_file(self.mean_file) if self.mean_file else None
        self.mean_values = (np.asarray(param.mean_value, dtype=np.float32)
                            if len(param.mean_value) else None)

    def output_shape(self, shape: tuple[int, ...], where: str = "") -> tuple[int, int, int]:
        """The ``(C, h, w)`` output for an input of ``shape`` (checks the crop fits)."""
        c, h, w = shape
        at = f" ({where})" if where else ""
        if c <= 0:
            raise FileFormatError(f"{self.who}: image{at} has no channels")
        if self.crop_size:
            if h < self.crop_size or w < self.crop_size:
                raise FileFormatError(
                    f"{self.who}: image{at} of size {h}x{w} is smaller than crop_size "
                    f"{self.crop_size}")
            return (c, self.crop_size, self.crop_size)
        return (c, h, w)

    def _mean_for(self, shape: tuple[int, int, int], where: str):
        if self.mean is not None:
            if self.mean.shape != shape:
                crop = f" (before cropping to {self.crop_size})" if self.crop_size else ""
                raise FileFormatError(
                    f"{self.who}: mean file '{self.mean_file}' has shape {self.mean.shape}, "
                    f"but the image ({where}) has shape {shape}; the mean must have the "
                    f"image's full size{crop}")
            return self.mean
        if self.mean_values is not None:
            n = len(self.mean_values)
            if n not in (1, shape[0]):
                raise LayerSetupError(
                    f"{self.who}: {n} mean_value entries for an image with {shape[0]} "
                    "channels; specify either 1 mean_value or as many as channels")
            return np.broadcast_to(self.mean_values, (shape[0],)).reshape(-1, 1, 1)
        return None

    def transform(self, img: np.ndarray, out: np.ndarray, u: np.ndarray | None = None,
                  where: str = "") -> None:
        """Write the transformed ``img`` into ``out`` (float32, of the output shape).
        ``u`` holds the three uniform numbers in [0, 1) for the random choices."""
        c, h, w = img.shape
        expected = self.output_shape(img.shape, where)
        if tuple(out.shape) != expected:
            raise FileFormatError(
                f"{self.who}: image ({where}) has shape {img.shape} and transforms to "
                f"{expected}, but this batch holds {tuple(out.shape)} (the first image of a "
                "batch sets its shape; use crop_size for images of different sizes)")
        oh, ow = expected[1:]
        h_off = w_off = 0
        if self.crop_size:
            if self.phase == Phase.TRAIN:
                h_off = int(u[1] * (h - oh + 1))
                w_off = int(u[2] * (w - ow + 1))
            else:
                h_off, w_off = (h - oh) // 2, (w - ow) // 2
        src = img[:, h_off:h_off + oh, w_off:w_off + ow]
        mean = self._mean_for(img.shape, where)
        per_pixel = self.mean is not None
        if per_pixel:
            mean = mean[:, h_off:h_off + oh, w_off:w_off + ow]
        if self.mirror and u[0] < 0.5:
            src = src[:, :, ::-1]
            if per_pixel:
                mean = mean[:, :, ::-1]
        if mean is None:
            np.copyto(out, src, casting="unsafe")
        else:
            np.subtract(src, mean, out=out, dtype=np.float32)
        if self.scale != 1:
            out *= self.scale

    def __call__(self, img: np.ndarray, u: np.ndarray | None = None,
                 where: str = "") -> np.ndarray:
        """The transformed image as a new float32 array."""
        out = np.empty(self.output_shape(img.shape, where), dtype=np.float32)
        self.transform(img, out, u, where)
        return out
