"""Real models in Caffe's old formats (tests/data/legacy) load through the upgrades and
classify: LeNet (V1 net + V1 caffemodel) on MNIST digits, CIFAR-10 full (V1, LRN within
channel), MTCNN's PNet (V2 net with the legacy input header, PReLU)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2, files, upgrade

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "legacy")
SHARED_MODELS = "/work/shared/models"


def data(*parts: str) -> str:
    return os.path.join(DATA, *parts)


def needs_types(*types: str):
    missing = [t for t in types if t not in caffe.layer_type_list()]
    return pytest.mark.skipif(bool(missing), reason=f"layer types not registered: {missing}")


@pytest.fixture(scope="module")
def lenet():
    return caffe.Net(data("lenet.prototxt"), caffe.TEST, weights=data("lenet_v1.caffemodel"))


@pytest.fixture(scope="module")
def digits():
    with np.load(data("mnist_t10k_first100.npz")) as f:
        return f["images"], f["labels"]


def test_lenet_v1_structure(lenet):
    assert lenet._layer_names == ["input", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1",
                                  "ip2", "prob"]
    assert [layer.type for layer in lenet.layers] == [
        "Input", "Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct", "ReLU",
        "InnerProduct", "Softmax"]
    assert lenet.blobs["data"].shape == (64, 1, 28, 28)
    shapes = {name: [b.shape for b in blobs] for name, blobs in lenet.params.items()}
    assert shapes == {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
                      "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)]}


def test_lenet_v1_weights_are_the_caffemodel_blobs(lenet):
    model = upgrade.read_weights_param(data("lenet_v1.caffemodel"))
    assert not model.layer and len(model.layers) > 0
    by_name = {lp.name: lp for lp in model.layers}
    for name, blobs in lenet.params.items():
        for blob, bp in zip(blobs, by_name[name].blobs):
            # V1 blobs keep the legacy 4-D shape (num, channels, height, width)
            legacy = (bp.num, bp.channels, bp.height, bp.width)
            assert not bp.HasField("shape") and legacy[4 - len(blob.shape):] == blob.shape
            np.testing.assert_array_equal(blob.data.ravel(), np.array(bp.data, np.float32))


def test_lenet_v1_classifies_mnist_digits(lenet, digits):
    images, labels = digits
    x = images[:, None].astype(np.float32) * 0.00390625
    prob = lenet.forward_all(data=x)["prob"]
    assert prob.shape == (100, 10)
    np.testing.assert_allclose(prob.sum(1), 1, rtol=1e-5)
    accuracy = float((prob.argmax(1) == labels).mean())
    assert accuracy > 0.95, accuracy


def test_lenet_v1_train_test_net_upgrades(tmp_path):
    param = upgrade.read_net_param(data("lenet_train_test.prototxt"))
    train, test = param.layer[0], param.layer[1]
    assert (train.type, train.include[0].phase, train.data_param.batch_size) == (
        "Data", caffe.TRAIN, 64)
    assert (test.include[0].phase, test.data_param.batch_size) == (caffe.TEST, 100)
    assert train.transform_param.scale == pytest.approx(1 / 256)
    conv1 = param.layer[2]
    assert [p.lr_mult for p in conv1.param] == [1, 2]
    types = [lp.type for lp in param.layer]
    assert types[-2:] == ["Accuracy", "SoftmaxWithLoss"]


def test_upgraded_text_and_binary_lenet_give_the_same_outputs(tmp_path, lenet, digits):
    from caffe.tools import cli

    net_out, model_out = str(tmp_path / "lenet_v2.prototxt"), str(tmp_path / "lenet_v2.model")
    assert cli.main(["upgrade_net_proto_text", data("lenet.prototxt"), net_out]) == 0
    assert cli.main(["upgrade_net_proto_binary", data("lenet_v1.caffemodel"), model_out]) == 0
    text = open(net_out).read()
    assert "layers {" not in text and 'type: "Convolution"' in text and "input:" not in text
    model = files.read_binary(model_out, caffe_pb2.NetParameter())
    assert not model.layers and [lp.name for lp in model.layer][:2] == ["mnist", "conv1"]
    net = caffe.Net(net_out, caffe.TEST, weights=model_out)
    x = digits[0][:64, None].astype(np.float32) / 256
    np.testing.assert_array_equal(net.forward(data=x)["prob"], lenet.forward(data=x)["prob"])


@needs_types("LRN")
def test_cifar10_full_v1_loads_and_runs():
    net = caffe.Net(data("cifar10_full.prototxt"), caffe.TEST,
                    weights=data("cifar10_full_v1.caffemodel"))
    assert [layer.type for layer in net.layers][:6] == [
        "Input", "Convolution", "Pooling", "ReLU", "LRN", "Convolution"]
    norm1 = net.layers[net._layer_names.index("norm1")].layer_param.lrn_param
    assert norm1.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL
    ip1 = net.layers[net._layer_names.index("ip1")].layer_param
    assert [(p.lr_mult, p.decay_mult) for p in ip1.param] == [(1, 250), (2, 0)]
    assert net.params["conv1"][0].shape == (32, 3, 5, 5)
    assert net.params["ip1"][0].shape == (10, 1024)
    assert float(np.abs(net.params["conv1"][0].data).sum()) > 0
    x = np.random.RandomState(0).uniform(-128, 128, (1, 3, 32, 32)).astype(np.float32)
    prob = net.forward(data=x)["prob"]
    assert prob.shape == (1, 10)
    np.testing.assert_allclose(prob.sum(), 1, rtol=1e-5)
    np.testing.assert_array_equal(net.forward(data=x)["prob"], prob)


def test_cifar10_quick_v1_shapes():
    net = caffe.Net(data("cifar10_quick.prototxt"), caffe.TEST)
    assert net.blobs["pool1"].shape == (1, 32, 16, 16)
    assert net.blobs["pool3"].shape == (1, 64, 4, 4)
    assert net.blobs["prob"].shape == (1, 10)


@pytest.mark.skipif(not os.path.isdir(SHARED_MODELS), reason="shared models not available")
def test_cifar10_quick_v1_with_its_weights():
    folder = os.path.join(SHARED_MODELS, "cifar10_quick_v1")
    net = caffe.Net(os.path.join(folder, "cifar10_quick.prototxt"), caffe.TEST,
                    weights=os.path.join(folder, "cifar10_quick_iter_5000.caffemodel"))
    x = np.random.RandomState(1).uniform(-128, 128, (1, 3, 32, 32)).astype(np.float32)
    prob = net.forward(data=x)["prob"]
    np.testing.assert_allclose(prob.sum(), 1, rtol=1e-5)


def _pnet_input(scale: float) -> np.ndarray:
    from PIL import Image

    image = Image.open(data("mtcnn", "test1.jpg")).convert("RGB")
    w, h = image.size
    image = image.resize((int(w * scale), int(h * scale)), Image.BILINEAR)
    pixels = (np.asarray(image, np.float32) - 127.5) * 0.0078125
    # MTCNN was trained with MATLAB Caffe: the blob is N x C x W x H
    return pixels.transpose(2, 1, 0)[None]


@needs_types("PReLU")
def test_mtcnn_pnet_finds_faces():
    pytest.importorskip("PIL")
    net = caffe.Net(data("mtcnn", "det1.prototxt"), caffe.TEST,
                    weights=data("mtcnn", "det1.caffemodel"))
    assert net._layer_names[0] == "input"
    assert net.params["PReLU1"][0].shape == (10,)
    x = _pnet_input(0.2)
    net.blobs["data"].reshape(*x.shape)
    net.reshape()
    out = net.forward(data=x)
    face = out["prob1"][0, 1]
    assert out["conv4-2"].shape[1] == 4 and out["prob1"].shape[1] == 2
    np.testing.assert_allclose(out["prob1"].sum(1), 1, rtol=1e-5)
    assert face.max() > 0.99
    assert (face > 0.9).mean() < 0.1  # a few windows are faces, most are not
