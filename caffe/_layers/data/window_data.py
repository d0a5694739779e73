"""WindowData: R-CNN training windows. Each batch holds ``batch_size - int(batch_size *
fg_fraction)`` background windows (label 0) then the foreground windows, each drawn at random
from a window file (see :mod:`caffe.data.windows`), cut out of its colour image (with
``context_pad`` pixels of context, ``crop_mode: "warp"`` or ``"square"``), warped to
``crop_size x crop_size`` with bilinear interpolation, randomly mirrored when ``mirror``, and
mean-subtracted and scaled; the part of the crop outside the image stays 0.

``window_data_param { source root_folder batch_size fg_threshold bg_threshold fg_fraction
context_pad crop_mode cache_images scale }`` with ``transform_param { crop_size mirror
mean_file | mean_value }``. Tops: data ``(batch_size, C, crop, crop)``, labels
``(batch_size,)``. No backward."""

from __future__ import annotations

import functools

import numpy as np

from caffe.data import naming_layer
from caffe.data.base_layer import PrefetchingDataLayer
from caffe.data.prefetch import Batcher, decode_workers, new_seed, pin_batches
from caffe.data.resume import fields, set_rng_state
from caffe.data.transformer import DataTransformer
from caffe.data.windows import WindowCropper, load_window_image, read_window_file
from caffe.errors import FileFormatError, LayerSetupError
from caffe.proto import caffe_pb2
from caffe.registry import register_layer


def _load_window(cropper: WindowCropper, path: str, cached: bytes | None, window, mirror: bool,
                 where: str):
    img = load_window_image(path, cached, where)
    return cropper(img, window, mirror, where), float(window.label), where


class WindowSampler:
    """The windows of each batch: for each (pool, count) of ``plan``, ``count`` windows drawn
    at random from ``pool``, each mirrored at random when ``mirror``. Its resume state is its
    generator's state."""

    def __init__(self, windows, cropper: WindowCropper, cache: dict[str, bytes], source: str,
                 mirror: bool, plan, seed: int) -> None:
        self.windows = windows
        self.cropper = cropper
        self.cache = cache
        self.source = source
        self.mirror = mirror
        self.plan = plan
        self.rng = np.random.default_rng(seed)

    def next_loaders(self) -> list:
        out = []
        for pool, n in self.plan:
            for _ in range(n):
                w = pool[int(self.rng.integers(len(pool)))]
                flip = bool(self.mirror and self.rng.integers(2))
                path = self.windows.images[w.image][0]
                where = f"window on line {w.line} of '{self.source}'"
                out.append(functools.partial(_load_window, self.cropper, path,
                                             self.cache.get(path), w, flip, where))
        return out

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def set_state(self, state: object) -> None:
        (rng,) = fields(state, ("rng",), "the window sampler's state")
        set_rng_state(self.rng, rng, "the window sampler's random state")


@register_layer("WindowData")
class WindowData(PrefetchingDataLayer):
    min_top_blobs = 2

    def setup(self, bottom, top):
        p = self.layer_param.window_data_param
        who = f"Layer '{self.name}' (WindowData)"
        batch_size = self.check_batch_size(p.batch_size, "window_data_param")
        if p.crop_mode not in ("warp", "square"):
            raise LayerSetupError(f"{who}: crop_mode must be 'warp' or 'square', got "
                                  f"'{p.crop_mode}'")
        with naming_layer(self):
            transform = DataTransformer(self.layer_param.transform_param, self.phase, who)
            crop = transform.crop_size
            if crop <= 0:
                raise LayerSetupError(f"{who}: transform_param.crop_size must be positive")
            if 2 * p.context_pad >= crop:
                raise LayerSetupError(f"{who}: context_pad {p.context_pad} leaves nothing of "
                                      f"a {crop}-pixel crop")
            windows = read_window_file(p.source, p.root_folder, p.fg_threshold,
                                       p.bg_threshold)
            channels = windows.images[-1][1][0]
            if channels != 3:
                raise FileFormatError(
                    f"window file '{p.source}': images are read in colour (3 channels), but "
                    f"the file declares {channels}")
            self._check_mean(transform, channels, crop)
            num_fg = int(np.float32(batch_size) * np.float32(p.fg_fraction))
            for pool, n, kind in ((windows.background, batch_size - num_fg, "background"),
                                  (windows.foreground, num_fg, "foreground")):
                if n and not pool:
                    raise FileFormatError(
                        f"window file '{p.source}' has no {kind} windows, but each batch "
                        f"needs {n} (fg_fraction {p.fg_fraction})")
            cache = {}
            if p.cache_images:
                for path, _ in windows.images:
                    try:
                        with open(path, "rb") as f:
                            cache[path] = f.read()
                    except OSError as e:
                        raise FileFormatError(f"cannot read image '{path}' (window file "
                                              f"'{p.source}'): {e.strerror}") from None
        cropper = WindowCropper(crop, p.context_pad, p.crop_mode == "square", p.scale,
                                transform.mean, transform.mean_values, channels)
        self.shape_tops(top, batch_size, (channels, crop, crop))
        sampler = WindowSampler(windows, cropper, cache, p.source, transform.mirror,
                                ((windows.background, batch_size - num_fg),
                                 (windows.foreground, num_fg)), new_seed())
        identity = DataTransformer(caffe_pb2.TransformationParameter(), self.phase, who)
        batcher = Batcher(identity, new_seed(), decode_workers(True), pin_batches())
        self.start_prefetch(sampler, batcher, self.layer_param.data_param.prefetch)

    def _check_mean(self, transform: DataTransformer, channels: int, crop: int) -> None:
        mean = transform.mean
        if mean is not None:
            off = (mean.shape[2] - crop) // 2
            if mean.shape[0] != channels or mean.shape[2] < crop or mean.shape[1] < off + crop:
                raise FileFormatError(
                    f"mean file '{transform.mean_file}' has shape {mean.shape}; WindowData "
                    f"needs {channels} channels and at least {crop}x{crop} pixels (its centre "
                    "is used)")
        values = transform.mean_values
        if values is not None and len(values) not in (1, channels):
            raise LayerSetupError(
                f"{len(values)} mean_value entries for {channels} channels; specify either 1 "
                "mean_value or as many as channels")
