"""A Python data layer that feeds MNIST digits from the IDX files in ``data/``.

The bundled set is MNIST's 10,000-image test set; this example splits it in two: the first
8,000 images train, the last 2,000 are held out to test. Pixels are scaled by 1/256 as in Caffe's
LeNet example.

Use it in a prototxt as::

    layer {
      name: "mnist" type: "Python" top: "data" top: "label"
      python_param {
        module: "mnist_data_layer" layer: "MnistDataLayer"
        param_str: "{'split': 'train', 'batch_size': 64}"
      }
    }

``param_str`` is a Python/JSON dict literal (read with ``ast.literal_eval``, never evaluated as
code): ``split`` ('train' or 'test', required), ``batch_size`` (required), ``data_dir`` (folder
of the IDX files, default: ``data`` next to this file). Batches are taken in order and wrap
around at the end of the split.

The module also offers ``load_mnist()`` for scripts (see classify.py).
"""

from __future__ import annotations

import ast
import functools
import gzip
import os

import numpy as np

import caffe

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"
NUM_TRAIN = 8000
SCALE = 0.00390625  # 1/256, Caffe's LeNet input scale


def _read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw, dtype=">i4", count=1 + ndim)
    if int(header[0]) != magic:
        raise ValueError(f"{path}: not an IDX file of the expected kind (magic "
                         f"{int(header[0]):#010x}, expected {magic:#010x})")
    shape = tuple(int(d) for d in header[1:])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim))
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {data.size} bytes")
    return data.reshape(shape)


@functools.lru_cache(maxsize=4)
def load_mnist(split: str = "all", data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: float32 images (N, 1, 28, 28) scaled by 1/256 and float32 labels
    (N,). ``split`` is 'train' (first 8,000), 'test' (last 2,000) or 'all'."""
    folder = data_dir or os.path.join(HERE, "data")
    images = _read_idx(os.path.join(folder, IMAGES), 0x803, 3)
    labels = _read_idx(os.path.join(folder, LABELS), 0x801, 1)
    rows = {"train": slice(0, NUM_TRAIN), "test": slice(NUM_TRAIN, None), "all": slice(None)}
    if split not in rows:
        raise ValueError(f"unknown MNIST split '{split}'; use 'train', 'test' or 'all'")
    images = images[rows[split]].astype(np.float32)[:, None] * np.float32(SCALE)
    return images, labels[rows[split]].astype(np.float32)


def parse_param_str(text: str) -> dict:
    """The layer's settings from its param_str (a dict literal; nothing is executed)."""
    try:
        params = ast.literal_eval(text) if text.strip() else {}
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"param_str must be a dict literal such as \"{{'split': 'train', "
                         f"'batch_size': 64}}\"; got {text!r} ({e})") from None
    if not isinstance(params, dict):
        raise ValueError(f"param_str must be a dict literal, got {type(params).__name__}")
    unknown = set(params) - {"split", "batch_size", "data_dir"}
    if unknown:
        raise ValueError(f"unknown param_str keys {sorted(unknown)}; allowed: split, "
                         "batch_size, data_dir")
    if params.get("split") not in ("train", "test"):
        raise ValueError(f"param_str needs 'split': 'train' or 'test', got "
                         f"{params.get('split')!r}")
    batch = params.get("batch_size")
    if not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"param_str needs a positive integer 'batch_size', got {batch!r}")
    return params


class MnistDataLayer(caffe.Layer):
    """Tops: data (batch_size, 1, 28, 28) and label (batch_size,)."""

    def setup(self, bottom, top):
        if bottom or len(top) != 2:
            raise ValueError(f"MnistDataLayer takes no bottoms and two tops (data, label); got "
                             f"{len(bottom)} bottoms and {len(top)} tops")
        params = parse_param_str(self.param_str)
        self.batch_size = params["batch_size"]
        self.images, self.labels = load_mnist(params["split"], params.get("data_dir"))
        self.cursor = 0
        top[0].reshape(self.batch_size, 1, 28, 28)
        top[1].reshape(self.batch_size)

    def reshape(self, bottom, top):
        """The tops keep the shapes set up once."""

    def forward(self, bottom, top):
        n = len(self.labels)
        rows = (self.cursor + np.arange(self.batch_size)) % n
        self.cursor = (self.cursor + self.batch_size) % n
        top[0].data[...] = self.images[rows]
        top[1].data[...] = self.labels[rows]

    def backward(self, top, propagate_down, bottom):
        """Data layers have nothing to propagate."""
