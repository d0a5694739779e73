"""ImageData (list files, wrap-around, shuffling, varying sizes) and WindowData (window files,
context padding, square crops, caching), with their errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.errors import FileFormatError, LayerSetupError

from layer_rows.data import bilinear

IMGS = [np.random.default_rng(i).integers(0, 256, (4 + i, 5, 3)).astype(np.uint8)
        for i in range(3)]


@pytest.fixture
def images(tmp_path):
    for i, img in enumerate(IMGS):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {i}\n" for i in range(3)))
    return tmp_path


def _image_net(folder, param="", transform="", root=None, phase=caffe.TEST):
    root = str(folder) + "/" if root is None else root
    (folder / "net.prototxt").write_text(
        f'layer {{ name: "i" type: "ImageData" top: "data" top: "label" image_data_param {{ '
        f'source: "{folder / "list.txt"}" root_folder: "{root}" {param} }} '
        f"transform_param {{ {transform} }} }}")
    return caffe.Net(str(folder / "net.prototxt"), phase)


def _bgr(img):
    return img[..., ::-1].transpose(2, 0, 1).astype(np.float32)


def test_images_of_different_sizes_one_per_batch(images):
    net = _image_net(images)
    for i in [0, 1, 2, 0]:
        out = net.forward()
        np.testing.assert_array_equal(out["data"][0], _bgr(IMGS[i]))
        assert out["label"].tolist() == [i]


def test_batches_wrap_and_crop_makes_sizes_agree(images):
    net = _image_net(images, "batch_size: 2", "crop_size: 4")
    assert net.forward()["label"].tolist() == [0, 1]
    assert net.forward()["label"].tolist() == [2, 0]
    np.testing.assert_array_equal(net.blobs["data"].data[0], _bgr(IMGS[2])[:, 1:5, 0:4])


def test_different_sizes_in_one_batch_name_the_image(images):
    net = _image_net(images, "batch_size: 2")
    with pytest.raises(FileFormatError, match=r"line 2 of .*transforms to \(3, 5, 5\), but this "
                                              r"batch holds \(3, 4, 5\)"):
        net.forward()


def test_shuffle_covers_every_image_per_pass(images):
    net = _image_net(images, "batch_size: 3 shuffle: true new_height: 4 new_width: 4")
    for _ in range(3):
        assert sorted(net.forward()["label"].tolist()) == [0, 1, 2]


def test_rand_skip_and_resize(images):
    caffe.set_random_seed(3)
    net = _image_net(images, "rand_skip: 3 new_height: 6 new_width: 3")
    label = int(net.forward()["label"][0])
    assert label in (0, 1, 2)
    expected = bilinear(IMGS[label][..., ::-1], 6, 3).transpose(2, 0, 1)
    assert np.abs(net.blobs["data"].data[0] - expected).max() <= 1


@pytest.mark.parametrize("case, error, pattern", [
    ("no_list", FileFormatError, r"image list file '.*list.txt' does not exist"),
    ("missing", FileFormatError, r"cannot read image '.*gone.png' \(line 2 of"),
    ("root", FileFormatError, r"root_folder '.*' is prepended as is: end it with '/'"),
    ("corrupt", FileFormatError, r"image '.*bad.png' \(line 1 of .*cannot decode the image"),
    ("label", FileFormatError, r"line 1: the label 'x' is not an integer"),
    ("one_size", LayerSetupError, "set new_height and new_width together"),
])
def test_image_data_errors(images, case, error, pattern):
    param, root = "", None
    if case == "no_list":
        (images / "list.txt").unlink()
    elif case == "missing":
        (images / "list.txt").write_text("0.png 0\ngone.png 1\n")
        param = "batch_size: 2 new_height: 3 new_width: 3"
    elif case == "root":
        root = str(images)
    elif case == "corrupt":
        (images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        (images / "list.txt").write_text("bad.png 0\n")
    elif case == "label":
        (images / "list.txt").write_text("0.png x\n")
    elif case == "one_size":
        param = "new_height: 3"
    with pytest.raises(error, match=pattern) as info:
        net = _image_net(images, param, root=root)
        net.forward()
        net.forward()
    assert "Layer 'i' (ImageData)" in str(info.value)


# ---------------------------------------------------------------------------- WindowData
WIN = np.random.default_rng(8).integers(0, 256, (12, 10, 3)).astype(np.uint8)


def _window_net(tmp_path, windows, param="", transform="crop_size: 8", channels=3):
    Image.fromarray(WIN).save(tmp_path / "w.png")
    lines = "".join(f"{w}\n" for w in windows)
    (tmp_path / "windows.txt").write_text(
        f"# 0\nw.png\n{channels}\n12\n10\n{len(windows)}\n{lines}")
    (tmp_path / "net.prototxt").write_text(
        f'layer {{ name: "w" type: "WindowData" top: "data" top: "label" window_data_param {{ '
        f'source: "{tmp_path / "windows.txt"}" root_folder: "{tmp_path}/" batch_size: 2 '
        f"fg_fraction: 0.5 {param} }} transform_param {{ {transform} }} }}")
    return caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)


def test_context_padding_at_the_border_leaves_zeros(tmp_path):
    net = _window_net(tmp_path, ["1 0.9 0 0 3 3", "0 0.0 5 6 9 11"], "context_pad: 2")
    out = net.forward()
    assert out["label"].tolist() == [0, 1]
    fg = out["data"][1]
    # 4x4 window at the corner, context scale 8 / (8 - 4) = 2: box -2..6 (9 pixels), clipped
    # to 0..6 (7 pixels) and warped to round(7 * 8/9) = 6 pixels after round(2 * 8/9) = 2
    # pixels of zero padding
    assert np.all(fg[:, :2, :] == 0) and np.all(fg[:, :, :2] == 0)
    expected = bilinear(WIN[0:7, 0:7, ::-1], 6, 6).transpose(2, 0, 1)
    assert np.abs(fg[:, 2:, 2:] - expected).max() <= 1


def test_square_mode_and_mirror_and_cache(tmp_path):
    windows = ["2 0.9 2 1 5 8", "0 0.1 0 0 9 11"]

    def run(param):
        caffe.set_random_seed(1)
        net = _window_net(tmp_path, windows, param, "crop_size: 8 mirror: true")
        return [net.forward()["data"].copy() for _ in range(10)]

    plain = run('crop_mode: "square"')
    cached = run('crop_mode: "square" cache_images: true')
    for a, b in zip(plain, cached):
        np.testing.assert_array_equal(a, b)
    fgs = {x[1].tobytes() for x in plain}
    assert len(fgs) == 2  # mirrored and not


@pytest.mark.parametrize("windows, extra, pattern", [
    (["1 0.9 0 0 3 3"], {}, "has no background windows, but each batch needs 1"),
    (["0 0.9 0 0 3 3", "0 0.1 0 0 3 3"], {}, r"line 7: a foreground window .* needs a positive"),
    (["1 0.9 0 zero 3 3"], {}, r"line 7: expected a window coordinate, got 'zero'"),
    (["1 0.9 0 0 3"], {}, "ends early: expected a window coordinate"),
    (["1 0.9 0 0 3 3", "0 0.1 0 0 3 3"], {"channels": 1}, "declares 1"),
    (["1 0.9 0 0 30 3", "0 0.1 0 0 3 3"], {}, r"window \(0, 0, 30, 3\) lies outside"),
])
def test_window_file_errors(tmp_path, windows, extra, pattern):
    with pytest.raises(FileFormatError, match=pattern):
        net = _window_net(tmp_path, windows, **extra)
        for _ in range(4):
            net.forward()


def test_window_data_needs_a_crop_size(tmp_path):
    with pytest.raises(LayerSetupError, match="crop_size must be positive"):
        _window_net(tmp_path, ["1 0.9 0 0 3 3", "0 0.1 0 0 3 3"], transform="")


def test_resize_is_opencvs_inter_linear_byte_for_byte():
    """Caffe resizes with cv::resize(INTER_LINEAR): 11-bit fixed point, not float bilinear
    rounded (which is off by one in about 12 % of the values). Expected values from OpenCV."""
    from caffe.data.image import resize

    img = np.array([[0, 50, 200, 255], [10, 90, 130, 30], [255, 0, 77, 3]], np.uint8)[..., None]
    assert resize(img, 5, 6)[..., 0].tolist() == [
        [0, 25, 75, 175, 227, 255], [4, 35, 83, 154, 168, 165], [10, 50, 97, 123, 80, 30],
        [157, 96, 46, 88, 56, 14], [255, 127, 13, 64, 40, 3]]
    img = (np.arange(35, dtype=np.uint8).reshape(7, 5) * 7)[..., None]
    assert resize(img, 3, 2)[..., 0].tolist() == [[29, 46], [110, 128], [192, 209]]
    halved = resize(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 9, 2, 2)[..., 0]
    assert halved.tolist() == [[23, 41], [95, 113]]  # exact halving: 2x2 means, rounded


def test_resize_matches_installed_opencv_on_random_images():
    cv2 = pytest.importorskip("cv2")
    from caffe.data.image import resize

    rng = np.random.default_rng(5)
    for i in range(60):
        (src_h, src_w), (h, w) = rng.integers(1, 90, 2), rng.integers(1, 200, 2)
        channels = (1, 3, 4)[i % 3]
        img = rng.integers(0, 256, (src_h, src_w, channels), dtype=np.uint8)
        want = cv2.resize(img, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(resize(img, int(h), int(w)), want.reshape(h, w, channels))
