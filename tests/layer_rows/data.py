"""Rows for the data layers: Data, HDF5Data, HDF5Output, MemoryData, ImageData, WindowData.

Their inputs are files: each row's ``bottoms`` callable writes them (once) into a temporary
folder and returns no arrays; the references rebuild the expected batches from the same
source arrays with NumPy (the helpers here are independent of caffe.data)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import h5py
import lmdb
import numpy as np
from PIL import Image

from caffe.proto import caffe_pb2

from layer_db import LayerCase

DIR = tempfile.mkdtemp(prefix="neocaffe-data-rows-")
atexit.register(shutil.rmtree, DIR, ignore_errors=True)
_RNG = np.random.default_rng(7)


def path(name: str) -> str:
    return os.path.join(DIR, name)


# ---------------------------------------------------------------------------- helpers
def write_lmdb(where: str, datums: list[caffe_pb2.Datum], keys: list[str] | None = None) -> None:
    """An LMDB of ``datums`` written with the lmdb package directly."""
    env = lmdb.open(where, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, d in enumerate(datums):
            txn.put((keys[i] if keys else "%08d" % i).encode(), d.SerializeToString())
    env.close()


def raw_datum(arr: np.ndarray, label: int) -> caffe_pb2.Datum:
    d = caffe_pb2.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                        label=label)
    if arr.dtype == np.uint8:
        d.data = arr.tobytes()
    else:
        d.float_data.extend(arr.ravel().tolist())
    return d


def png_bytes(hwc_rgb: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    mode = "L" if hwc_rgb.shape[2] == 1 else "RGB"
    Image.fromarray(hwc_rgb.reshape(hwc_rgb.shape[:2]) if mode == "L" else hwc_rgb,
                    mode).save(buf, "PNG")
    return buf.getvalue()


def bilinear(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """OpenCV's INTER_LINEAR resize of an HxWxC image in float64, rounded."""
    ih, iw = img.shape[:2]

    def axis(o, i):
        x = np.maximum((np.arange(o) + 0.5) * (i / o) - 0.5, 0.0)
        x0 = np.minimum(np.floor(x).astype(int), i - 1)
        return x0, np.minimum(x0 + 1, i - 1), x - x0

    y0, y1, fy = axis(oh, ih)
    x0, x1, fx = axis(ow, iw)
    a = img.astype(np.float64)
    rows = a[y0] * (1 - fy)[:, None, None] + a[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.floor(out + 0.5)


def crops(img: np.ndarray, size: int) -> list[np.ndarray]:
    """Every size x size crop of a CxHxW image, plain and mirrored."""
    out = []
    for y in range(img.shape[1] - size + 1):
        for x in range(img.shape[2] - size + 1):
            c = img[:, y:y + size, x:x + size]
            out += [c, c[:, :, ::-1]]
    return out


def is_one_of(item: np.ndarray, candidates: list[np.ndarray]) -> bool:
    return any(np.allclose(item, c, atol=1e-5) for c in candidates)


# ---------------------------------------------------------------------------- Data
RAW = _RNG.integers(0, 256, (5, 3, 6, 7)).astype(np.uint8)
FLOAT = _RNG.standard_normal((3, 2, 3, 4)).astype(np.float32)
FLOAT_MEAN = _RNG.standard_normal((2, 3, 4)).astype(np.float32)
GREY = _RNG.integers(0, 256, (4, 5, 6, 1)).astype(np.uint8)
COLOR = _RNG.integers(0, 256, (4, 5, 6, 3)).astype(np.uint8)  # RGB, as written to PNG


def _raw_lmdb(rng):
    if not os.path.exists(path("raw")):
        write_lmdb(path("raw"), [raw_datum(a, i + 1) for i, a in enumerate(RAW)])
    return []


def _float_lmdb(rng):
    if not os.path.exists(path("float")):
        write_lmdb(path("float"), [raw_datum(a, 10 + i) for i, a in enumerate(FLOAT)])
        bp = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4)
        bp.data.extend(FLOAT_MEAN.ravel().tolist())
        with open(path("float_mean.binaryproto"), "wb") as f:
            f.write(bp.SerializeToString())
    return []


def _png_lmdb(rng):
    if not os.path.exists(path("png")):
        datums = []
        for i, img in enumerate(np.concatenate([np.repeat(GREY, 3, 3), COLOR])):
            datums.append(caffe_pb2.Datum(data=png_bytes(img), label=i, encoded=True))
        write_lmdb(path("png"), datums)
    return []


def _centre_crop_ref(b, layer):
    x = RAW[:3, :, 1:5, 1:5].astype(np.float32)
    mean = np.array([10, 20, 30], np.float32)[:, None, None]
    return [(x - mean) * np.float32(0.5), np.arange(1, 4)]


def _png_colour_check(layer, bottom, top):
    bgr = COLOR[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    data = top[0].data
    assert data.shape == (2, 3, 4, 4)
    for item, src in zip(data, np.concatenate([np.repeat(GREY, 3, 3)[..., ::-1].transpose(
            0, 3, 1, 2), bgr])[:2]):
        assert is_one_of(item, crops(src.astype(np.float32), 4))


DATA_ROWS = [
    LayerCase("Data", "lmdb_uint8_test_crop_mean_values", _raw_lmdb, _centre_crop_ref,
              param=f"data_param {{ source: '{path('raw')}' backend: LMDB batch_size: 3 }} "
                    "transform_param { crop_size: 4 mean_value: 10 mean_value: 20 "
                    "mean_value: 30 scale: 0.5 }",
              num_tops=2, grad="none", phase="TEST", bad_bottom_counts=[1],
              bad_top_counts=[0, 3]),
    LayerCase("Data", "float_data_mean_file_no_label", _float_lmdb,
              lambda b, layer: [FLOAT[:2] - FLOAT_MEAN],
              param=f"data_param {{ source: '{path('float')}' backend: LMDB batch_size: 2 }} "
                    f"transform_param {{ mean_file: '{path('float_mean.binaryproto')}' }}",
              grad="none"),
    LayerCase("Data", "encoded_png_force_gray", _png_lmdb,
              lambda b, layer: [GREY[:3].transpose(0, 3, 1, 2) / np.float32(255),
                                np.arange(3)],
              param=f"data_param {{ source: '{path('png')}' backend: LMDB batch_size: 3 }} "
                    "transform_param { force_gray: true scale: 0.00392156862745098 }",
              num_tops=2, grad="none"),
    LayerCase("Data", "encoded_png_train_crop_mirror", _png_lmdb, None,
              param=f"data_param {{ source: '{path('png')}' backend: LMDB batch_size: 2 }} "
                    "transform_param { crop_size: 4 mirror: true }",
              grad="none", check=_png_colour_check),
]


# ---------------------------------------------------------------------------- HDF5Data
H5_A = _RNG.standard_normal((4, 2, 3)).astype(np.float32)
H5_B = _RNG.standard_normal((3, 2, 3)).astype(np.float32)


def _h5_files(rng):
    if not os.path.exists(path("h5list.txt")):
        for name, data, first in (("a.h5", H5_A, 0), ("b.h5", H5_B, 4)):
            with h5py.File(path(name), "w") as f:  # the test harness names tops t0, t1
                f["t0"] = data
                f["t1"] = np.arange(first, first + len(data), dtype=np.int32)
        with open(path("h5list.txt"), "w") as f:
            f.write(f"{path('a.h5')}\n{path('b.h5')}\n")
    return []


def _h5_shuffle_check(layer, bottom, top):
    rows = np.concatenate([H5_A, H5_B])
    labels = top[1].data.astype(int)
    assert len(set(labels.tolist())) == 3
    np.testing.assert_array_equal(top[0].data, rows[labels])


HDF5_ROWS = [
    LayerCase("HDF5Data", "two_files_across_boundary", _h5_files,
              lambda b, layer: [np.concatenate([H5_A, H5_B[:1]]), np.arange(5)],
              param=f"hdf5_data_param {{ source: '{path('h5list.txt')}' batch_size: 5 }}",
              num_tops=2, grad="none", bad_bottom_counts=[1], bad_top_counts=[0]),
    LayerCase("HDF5Data", "shuffle", _h5_files, None,
              param=f"hdf5_data_param {{ source: '{path('h5list.txt')}' batch_size: 3 "
                    "shuffle: true }", num_tops=2, grad="none", check=_h5_shuffle_check),
]


# ---------------------------------------------------------------------------- HDF5Output
def _h5_output_check(layer, bottom, top):
    with h5py.File(path("out.h5"), "r") as f:
        np.testing.assert_array_equal(f["data"][()], bottom[0].data)
        np.testing.assert_array_equal(f["label"][()], bottom[1].data.reshape(2, 1, 1, 1))


OUTPUT_ROWS = [
    LayerCase("HDF5Output", "data_label",
              lambda rng: [rng.standard_normal((2, 3, 2, 2)), np.array([1.0, 2.0])],
              None, param=f"hdf5_output_param {{ file_name: '{path('out.h5')}' }}",
              num_tops=0, grad="none", check=_h5_output_check, bad_bottom_counts=[1, 3],
              bad_top_counts=[1]),
]


# ---------------------------------------------------------------------------- MemoryData
MEM_DATA = _RNG.standard_normal((4, 2, 3, 2)).astype(np.float32)
MEM_LABELS = np.arange(4, dtype=np.float32)


class MemoryCase(LayerCase):
    """MemoryData serves nothing before ``reset``: the layer gets the arrays right after
    its set-up (as ``net.set_input_arrays`` would)."""

    def make_layer(self, n_bottom, n_top=None):
        layer = super().make_layer(n_bottom, n_top)
        set_up = layer.SetUp

        def set_up_then_reset(bottom, top):
            set_up(bottom, top)
            layer.reset(MEM_DATA, MEM_LABELS, len(MEM_DATA))

        layer.SetUp = set_up_then_reset
        return layer


MEMORY_ROWS = [
    MemoryCase("MemoryData", "batch2", lambda rng: [],
               lambda b, layer: [MEM_DATA[:2], MEM_LABELS[:2].reshape(2, 1, 1, 1)],
               param="memory_data_param { batch_size: 2 channels: 2 height: 3 width: 2 }",
               num_tops=2, grad="none", bad_bottom_counts=[1], bad_top_counts=[1, 3]),
]


# ---------------------------------------------------------------------------- ImageData
IMAGES = _RNG.integers(0, 256, (3, 7, 5, 3)).astype(np.uint8)  # RGB files


def _image_files(rng):
    if not os.path.exists(path("images.txt")):
        os.makedirs(path("img"), exist_ok=True)
        lines = []
        for i, img in enumerate(IMAGES):
            Image.fromarray(img).save(path(f"img/p{i}.png"))
            Image.fromarray(img[:, :, 0]).save(path(f"img/g{i}.png"))
            lines.append(f"p{i}.png {i + 5}")
        with open(path("images.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(path("grey.txt"), "w") as f:
            f.write("".join(f"g{i}.png {i}\n" for i in range(3)))
    return []


def _resized_ref(b, layer):
    out = [bilinear(img[:, :, ::-1], 4, 6).transpose(2, 0, 1) for img in IMAGES[:2]]
    return [np.stack(out), np.array([5, 6])]


def _grey_shuffle_check(layer, bottom, top):
    labels = top[1].data.astype(int)
    assert sorted(labels.tolist()) == [0, 1, 2]
    expected = IMAGES[labels, :, :, 0][:, None].astype(np.float32)
    np.testing.assert_array_equal(top[0].data, expected)


IMAGE_ROWS = [
    LayerCase("ImageData", "resize_bgr", _image_files, _resized_ref,
              param=f"image_data_param {{ source: '{path('images.txt')}' root_folder: "
                    f"'{path('img')}/' batch_size: 2 new_height: 4 new_width: 6 }}",
              num_tops=2, grad="none", phase="TEST", atol=1.0, rtol=0.0,
              bad_bottom_counts=[1], bad_top_counts=[1, 3]),
    LayerCase("ImageData", "grey_shuffle", _image_files, None,
              param=f"image_data_param {{ source: '{path('grey.txt')}' root_folder: "
                    f"'{path('img')}/' batch_size: 3 is_color: false shuffle: true }}",
              num_tops=2, grad="none", check=_grey_shuffle_check),
]


# ---------------------------------------------------------------------------- WindowData
WIN_IMAGE = _RNG.integers(0, 256, (12, 10, 3)).astype(np.uint8)  # RGB file
FG_BOX, BG_BOX = (1, 2, 6, 9), (4, 0, 9, 5)  # x1 y1 x2 y2


def _window_file(rng):
    if not os.path.exists(path("windows.txt")):
        Image.fromarray(WIN_IMAGE).save(path("win.png"))
        with open(path("windows.txt"), "w") as f:
            f.write(f"# 0\n{path('win.png')}\n3\n12\n10\n3\n"
                    f"3 0.8 {' '.join(map(str, FG_BOX))}\n"
                    f"2 0.1 {' '.join(map(str, BG_BOX))}\n"
                    "1 0.3 0 0 3 3\n")
    return []


def _window_ref(b, layer):
    bgr = WIN_IMAGE[:, :, ::-1]
    mean = np.array([1, 2, 3], np.float64)

    def warp(box):
        x1, y1, x2, y2 = box
        return ((bilinear(bgr[y1:y2 + 1, x1:x2 + 1], 5, 5) - mean) * 0.5).transpose(2, 0, 1)

    bg, fg = warp(BG_BOX), warp(FG_BOX)
    return [np.stack([bg, bg, bg, fg]), np.array([0, 0, 0, 3])]


WINDOW_ROWS = [
    LayerCase("WindowData", "warp_bg_then_fg", _window_file, _window_ref,
              param=f"window_data_param {{ source: '{path('windows.txt')}' batch_size: 4 "
                    "fg_fraction: 0.25 fg_threshold: 0.7 bg_threshold: 0.2 scale: 0.5 } "
                    "transform_param { crop_size: 5 mean_value: 1 mean_value: 2 mean_value: 3 }",
              num_tops=2, grad="none", atol=0.5, rtol=0.0, bad_bottom_counts=[1],
              bad_top_counts=[1, 3]),  # 1 grey level: bilinear rounding at .5
]

ROWS = DATA_ROWS + HDF5_ROWS + OUTPUT_ROWS + MEMORY_ROWS + IMAGE_ROWS + WINDOW_ROWS
