"""caffe.Classifier (ten-crop oversampling or the centre crop) and caffe.Detector (windows,
with and without context padding) on a tiny linear net."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import caffe

DEPLOY = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4
  dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def model(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    net = caffe.Net(str(tmp_path / "deploy.prototxt"), caffe.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    return str(tmp_path / "deploy.prototxt"), str(tmp_path / "w.caffemodel"), net


def _scores(net, batch):
    out = []
    for x in batch:
        net.blobs["data"].data[...] = x
        out.append(net.forward()["prob"][0].copy())
    return np.array(out)


def test_classifier_oversample_and_centre(model):
    deploy, weights, ref = model
    clf = caffe.Classifier(deploy, weights, image_dims=(6, 6), mean=np.array([0.1, 0.2, 0.3]),
                           raw_scale=2.0, channel_swap=(2, 1, 0))
    images = [np.random.default_rng(i).random((9, 7, 3)).astype(np.float32) for i in range(3)]
    pred = clf.predict(images)
    assert pred.shape == (3, 5)
    np.testing.assert_allclose(pred.sum(1), 1, rtol=1e-5)
    resized = [caffe.io.resize_image(im, (6, 6)) for im in images]
    crops = caffe.io.oversample(resized, (4, 4))
    x = np.stack([clf.transformer.preprocess("data", c) for c in crops])
    expected = _scores(ref, x[:, None]).reshape(3, 10, 5).mean(1)
    np.testing.assert_allclose(pred, expected, rtol=1e-4, atol=1e-6)
    centre = clf.predict(images, oversample=False)
    x = np.stack([clf.transformer.preprocess("data", r[1:5, 1:5]) for r in resized])
    np.testing.assert_allclose(centre, _scores(ref, x[:, None]), rtol=1e-4, atol=1e-6)


def test_detector_windows_and_context_pad(model, tmp_path):
    deploy, weights, ref = model
    rgb = np.random.default_rng(5).integers(0, 256, (10, 12, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "im.png")
    det = caffe.Detector(deploy, weights, mean=np.array([0.5, 0.5, 0.5]))
    windows = [np.array([0, 0, 4, 4]), np.array([2, 3, 10, 12])]
    out = det.detect_windows([(str(tmp_path / "im.png"), windows)])
    assert [d["filename"] for d in out] == [str(tmp_path / "im.png")] * 2
    im = caffe.io.load_image(str(tmp_path / "im.png"))
    x = det.transformer.preprocess("data", im[0:4, 0:4])
    np.testing.assert_allclose(out[0]["prediction"], _scores(ref, x[None, None])[0], rtol=1e-4)
    padded = caffe.Detector(deploy, weights, mean=np.array([0.5, 0.5, 0.5]), context_pad=1)
    crop = padded.crop(im, np.array([0, 0, 4, 4]))
    assert crop.shape == (4, 4, 3)
    np.testing.assert_allclose(crop[0, :, :], 0.5)  # out of the image: the mean
    assert len(padded.detect_windows([(str(tmp_path / "im.png"), windows)])) == 2
