"""R-CNN window files and the window sampling of Caffe's WindowData layer.

A window file repeats, per image::

    # image_index
    image_path
    channels
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines, 0-based inclusive pixel boxes)

Windows with ``overlap >= fg_threshold`` are foreground (their class must be positive);
windows with ``overlap < bg_threshold`` are background (label 0); the others are unused."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from caffe.data.image import decode_image, read_image, resize
from caffe.data.sources import read_text_lines
from caffe.errors import FileFormatError


@dataclass(frozen=True)
class Window:
    image: int
    label: int
    overlap: float
    x1: int
    y1: int
    x2: int
    y2: int
    line: int


@dataclass
class WindowFile:
    images: list[tuple[str, tuple[int, int, int]]]
    foreground: list[Window]
    background: list[Window]


def read_window_file(source: str, root_folder: str, fg_threshold: float,
                     bg_threshold: float) -> WindowFile:
    """Parse ``source``; errors name the line."""
    tokens = [(tok, i) for i, line in enumerate(read_text_lines(source, "window file"), 1)
              for tok in line.split()]
    if not tokens:
        raise FileFormatError(f"window file '{source}' is empty")
    pos = 0

    def take(kind: type, what: str):
        nonlocal pos
        if pos >= len(tokens):
            raise FileFormatError(f"window file '{source}' ends early: expected {what}")
        tok, line = tokens[pos]
        pos += 1
        try:
            return kind(tok), line
        except ValueError:
            raise FileFormatError(
                f"window file '{source}' line {line}: expected {what}, got '{tok}'") from None

    images: list[tuple[str, tuple[int, int, int]]] = []
    fg: list[Window] = []
    bg: list[Window] = []
    indices: list[tuple[int, int]] = []
    while pos < len(tokens):
        tag, line = take(str, "'#' before an image index")
        if tag != "#":
            raise FileFormatError(
                f"window file '{source}' line {line}: expected '#' to start an image entry, "
                f"got '{tag}'")
        index, index_line = take(int, "an image index")
        path, _ = take(str, "an image path")
        size = tuple(take(int, f"the image {what}")[0] for what in ("channels", "height",
                                                                     "width"))
        count, _ = take(int, "the number of windows")
        images.append((root_folder + path, size))
        indices.append((index, index_line))
        for _ in range(count):
            label, wline = take(int, "a window's class index")
            overlap = take(float, "a window's overlap")[0]
            x1, y1, x2, y2 = (take(int, "a window coordinate")[0] for _ in range(4))
            if overlap >= fg_threshold:
                if label <= 0:
                    raise FileFormatError(
                        f"window file '{source}' line {wline}: a foreground window (overlap "
                        f"{overlap} >= fg_threshold {fg_threshold}) needs a positive class, "
                        f"got {label}")
                fg.append(Window(index, label, overlap, x1, y1, x2, y2, wline))
            elif overlap < bg_threshold:
                bg.append(Window(index, 0, 0.0, x1, y1, x2, y2, wline))
    for index, line in indices:
        if not 0 <= index < len(images):
            raise FileFormatError(
                f"window file '{source}' line {line}: image index {index} is out of range; "
                f"the file describes {len(images)} images, numbered from 0 in file order")
    return WindowFile(images, fg, bg)


def _c_round(x: float) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


class WindowCropper:
    """Cuts a window (with context padding, or squared) out of an image, warps it to
    ``crop_size`` and subtracts the mean, exactly as Caffe's WindowDataLayer."""

    def __init__(self, crop_size: int, context_pad: int, square: bool, scale: float,
                 mean: np.ndarray | None, mean_values: np.ndarray | None,
                 channels: int) -> None:
        self.crop = crop_size
        self.context_pad = context_pad
        self.square = square
        self.scale = np.float32(scale)
        self.mean = mean
        self.mean_off = (mean.shape[2] - crop_size) // 2 if mean is not None else 0
        self.mean_values = mean_values
        self.channels = channels

    def geometry(self, w: Window, rows: int, cols: int) -> tuple[int, ...]:
        """(x1, y1, x2, y2) of the clipped region in the image, its warped size (h, w) and
        the padding in the output (top, left, right)."""
        f32 = np.float32
        x1, y1, x2, y2 = w.x1, w.y1, w.x2, w.y2
        crop = self.crop
        out_h = out_w = crop
        pad_y1 = pad_x1 = pad_x2 = 0
        if self.context_pad > 0 or self.square:
            context_scale = f32(crop) / f32(crop - 2 * self.context_pad)
            half_h = f32((y2 - y1 + 1) / 2.0)
            half_w = f32((x2 - x1 + 1) / 2.0)
            cx = f32(x1) + half_w
            cy = f32(y1) + half_h
            if self.square:
                half_h = half_w = max(half_h, half_w)
            x1 = _c_round(float(cx - half_w * context_scale))
            x2 = _c_round(float(cx + half_w * context_scale))
            y1 = _c_round(float(cy - half_h * context_scale))
            y2 = _c_round(float(cy + half_h * context_scale))
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            sx = f32(crop) / f32(unclipped_w)
            sy = f32(crop) / f32(unclipped_h)
            out_w = _c_round(float(f32(x2 - x1 + 1) * sx))
            out_h = _c_round(float(f32(y2 - y1 + 1) * sy))
            pad_x1 = _c_round(float(f32(pad_x1) * sx))
            pad_x2 = _c_round(float(f32(pad_x2) * sx))
            pad_y1 = _c_round(float(f32(pad_y1) * sy))
        return x1, y1, x2, y2, out_h, out_w, pad_y1, pad_x1, pad_x2

    def __call__(self, img: np.ndarray, w: Window, mirror: bool, where: str) -> np.ndarray:
        rows, cols = img.shape[:2]
        x1, y1, x2, y2, out_h, out_w, pad_h, pad_l, pad_r = self.geometry(w, rows, cols)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows):
            raise FileFormatError(
                f"{where}: window ({w.x1}, {w.y1}, {w.x2}, {w.y2}) lies outside the "
                f"{cols}x{rows} image")
        pad_w = pad_r if mirror else pad_l
        out_h = min(out_h, self.crop - pad_h)
        out_w = min(out_w, self.crop - pad_w)
        if out_h <= 0 or out_w <= 0:
            raise FileFormatError(f"{where}: window warps to an empty {out_h}x{out_w} region")
        warped = resize(img[y1:y2 + 1, x1:x2 + 1], out_h, out_w)
        if mirror:
            warped = warped[:, ::-1]
        region = warped.transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            r0, c0 = self.mean_off + pad_h, self.mean_off + pad_w
            region -= self.mean[:, r0:r0 + out_h, c0:c0 + out_w]
        elif self.mean_values is not None:
            region -= np.broadcast_to(self.mean_values, (self.channels,))[:, None, None]
        out = np.zeros((self.channels, self.crop, self.crop), dtype=np.float32)
        out[:, pad_h:pad_h + out_h, pad_w:pad_w + out_w] = region * self.scale
        return out


def load_window_image(path: str, cached: bytes | None, where: str) -> np.ndarray:
    """The colour image a window is cut from (from the cache when given)."""
    if cached is not None:
        return decode_image(cached, True, f"image '{path}' ({where})")
    return read_image(path, color=True, where=where)
