"""The pycaffe Net surface: blobs/params/layers dictionaries, names, inputs/outputs, forward and
backward with start/end and keyword inputs, forward_all, callbacks, reshape, blob semantics."""

from __future__ import annotations

import os

import numpy as np
import pytest

import caffe

from nets import make_net, write

SIMPLE = """name: 'testnet' force_backward: true
layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
  dummy_data_param { num: 5 channels: 2 height: 3 width: 4
    num: 5 channels: 1 height: 1 width: 1
    data_filler { type: 'gaussian' std: 1 }
    data_filler { type: 'constant' } } }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
  convolution_param { num_output: 11 kernel_size: 2 pad: 3
    weight_filler { type: 'gaussian' std: 1 }
    bias_filler { type: 'constant' value: 2 } }
    param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip'
  inner_product_param { num_output: 13
    weight_filler { type: 'gaussian' std: 2.5 }
    bias_filler { type: 'constant' value: -3 } } }
layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip' bottom: 'label' top: 'loss' }
"""


@pytest.fixture
def net():
    n = caffe.Net(write(SIMPLE), caffe.TRAIN)
    n.blobs["label"].data[...] = np.random.default_rng(0).integers(13, size=(5, 1, 1, 1))
    return n


def test_names_and_dicts(net):
    assert list(net.blobs) == ["data", "label", "conv", "ip", "loss"]
    assert net._blob_names == list(net.blobs)
    assert list(net.layer_dict) == ["data", "conv", "ip", "loss"] == net._layer_names
    assert [layer.type for layer in net.layers] == ["DummyData", "Convolution", "InnerProduct",
                                                     "SoftmaxWithLoss"]
    assert list(net.params) == ["conv", "ip"]
    assert [b.shape for b in net.params["conv"]] == [(11, 2, 2, 2), (11,)]
    assert net.top_names["data"] == ["data", "label"]
    assert net.bottom_names["loss"] == ["ip", "label"]
    assert net.inputs == [] and net.outputs == ["loss"]
    assert net.params_weight_decay == [1.0, 0.0, 1.0, 1.0]
    # pycaffe's index accessors are methods: net._top_ids(i), net._bottom_ids(i)
    assert [net._blob_names[i] for i in net._top_ids(0)] == ["data", "label"]
    assert [net._blob_names[i] for i in net._bottom_ids(3)] == ["ip", "label"]


def test_blobs_outlive_the_net(net):
    params = [b for blobs in net.params.values() for b in blobs]
    blobs = list(net.blobs.values())
    del net
    total = sum(float(p.data.sum() + p.diff.sum()) for p in params)
    total += sum(float(b.data.sum() + b.diff.sum()) for b in blobs)
    assert np.isfinite(total)


def test_forward_returns_outputs_and_requested_blobs(net):
    out = net.forward(blobs=["conv"])
    assert set(out) == {"loss", "conv"}
    assert out["conv"].shape == (5, 11, 8, 9)
    assert np.isfinite(out["loss"])


def test_forward_start_end_matches_full_forward(net):
    net.forward()
    full = net.blobs["ip"].data.copy()
    net.blobs["ip"].data[...] = 0
    out = net.forward(start="conv", end="ip")
    assert set(out) == {"ip"}
    np.testing.assert_allclose(out["ip"], full, rtol=1e-6)


def test_backward_start_end(net):
    net.forward()
    net.backward()
    grad = net.blobs["conv"].diff.copy()
    net.blobs["conv"].diff[...] = 0
    out = net.backward(start="loss", end="ip")
    assert set(out) == {"conv"}
    np.testing.assert_allclose(out["conv"], grad, rtol=1e-6)


def test_forward_with_keyword_inputs_and_forward_all():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 } } }
    layer { name: "sm" type: "Softmax" bottom: "x" top: "p" }
    """
    net = make_net(text, caffe.TEST)
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    out = net.forward(x=x)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(out["p"], e / e.sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="do not match the net.s inputs"):
        net.forward(y=x)
    with pytest.raises(ValueError, match="batch size"):
        net.forward(x=x[:2])
    many = np.random.default_rng(2).standard_normal((10, 3)).astype(np.float32)
    all_out = net.forward_all(x=many)
    e = np.exp(many - many.max(1, keepdims=True))
    np.testing.assert_allclose(all_out["p"], e / e.sum(1, keepdims=True), rtol=1e-5)


def test_backward_with_keyword_diffs():
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "relu" type: "ReLU" bottom: "x" top: "y" }
    """
    net = make_net(text)
    net.blobs["x"].data[...] = [[1, -1, 2], [-2, 3, -3]]
    net.forward()
    out = net.backward(y=np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(out["x"], [[1, 0, 1], [0, 1, 0]])
    fwd, bwd = net.forward_backward_all(x=np.ones((4, 3), np.float32),
                                        y=np.full((4, 3), 2, np.float32))
    assert fwd["y"].shape == (4, 3) and (bwd["x"] == 2).all()


def test_callbacks_see_every_layer(net):
    calls = []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i)))
    net.before_backward(lambda i: calls.append(("bb", i)))
    net.after_backward(lambda i: calls.append(("ab", i)))
    net.forward()
    net.backward()
    assert calls[:2] == [("bf", 0), ("af", 0)]
    assert [c for c in calls if c[0] == "bb"] == [("bb", i) for i in (3, 2, 1, 0)]
    assert len(calls) == 16


def test_reshape_after_input_change():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 5
            dim: 5 } } }
    layer { name: "pool" type: "Pooling" bottom: "x" top: "y"
            pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    """
    net = make_net(text, caffe.TEST)
    assert net.blobs["y"].shape == (1, 1, 3, 3)
    net.blobs["x"].reshape(2, 1, 9, 9)
    net.reshape()
    assert net.blobs["y"].shape == (2, 1, 5, 5)
    net.forward()
    assert net.blobs["y"].data.shape == (2, 1, 5, 5)


def test_blob_semantics():
    b = caffe.Blob(2, 3, 4)
    assert b.shape == (2, 3, 4) and b.count == 24
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 1)
    view = b.data
    view[...] = 7.0
    assert float(b.tensor.sum()) == 7.0 * 24  # zero-copy write-through
    assert b.data.base is not None or b.data.flags.owndata is False
    b.reshape(4, 6)
    np.testing.assert_array_equal(b.data, np.full((4, 6), 7.0))  # same count keeps data
    b.reshape(5)  # smaller: Caffe keeps the memory, and the held view still shows it
    assert b.shape == (5,) and (b.data == 7).all()
    view[0, 0, 0] = 3.0
    assert b.data[0] == 3.0
    b.diff[...] = 1
    assert float(b.diff_tensor.sum()) == 5
    b.reshape(2, 5)  # larger than it is: new zeroed memory
    assert not b.data.any() and not b.diff.any()
    assert b.data.dtype == np.float32


def test_layer_type_list_and_phases():
    types = caffe.layer_type_list()
    assert types == sorted(types) and {"Convolution", "ReLU", "Input", "Python"} <= set(types)
    assert caffe.TRAIN == 0 and caffe.TEST == 1 and str(caffe.TRAIN) == "TRAIN"


def test_pycaffes_modules_are_importable():
    # scripts import from pycaffe's own modules: caffe.pycaffe, caffe._caffe, caffe.io, ...
    import caffe.pycaffe
    from caffe.pycaffe import Net, SGDSolver  # noqa: F401

    assert caffe.pycaffe.Net is caffe.Net and caffe.pycaffe.NCCL is caffe.NCCL
    # the compiled module is an attribute without an import of its own, as in pycaffe
    assert caffe._caffe.Net is caffe.Net and caffe._caffe.LayerParameter is not None
    assert set(caffe.pycaffe.__all__) <= set(dir(caffe))
    for module in ("caffe.io", "caffe.draw", "caffe.net_spec", "caffe.coord_map",
                   "caffe.classifier", "caffe.detector", "caffe.proto.caffe_pb2", "caffe._caffe"):
        __import__(module)


STAGED = """name: 'staged'
layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 2 } } }
layer { name: 'deep' type: 'Power' bottom: 'x' top: 'y' include { min_level: 1 } }
layer { name: 'deploy' type: 'Power' bottom: 'x' top: 'z' include { stage: 'deploy' } }
"""


def _layers(net: caffe.Net) -> list[str]:
    return [name for name in net.layer_dict if "split" not in name]


def test_constructor_takes_level_stages_and_weights_by_position(tmp_path):
    path = write(STAGED)
    weights = str(tmp_path / "w.caffemodel")
    caffe.Net(path, caffe.TEST).save(weights)
    assert _layers(caffe.Net(path, caffe.TEST, 1)) == ["in", "deep"]
    assert _layers(caffe.Net(path, caffe.TEST, 0, ["deploy"])) == ["in", "deploy"]
    assert _layers(caffe.Net(path, caffe.TEST, 1, ["deploy"], weights)) == [
        "in", "deep", "deploy"]
    assert _layers(caffe.Net(path, weights, caffe.TEST)) == ["in"]  # the legacy form
    assert _layers(caffe.Net(path, caffe.TEST, stages=["deploy"], level=1)) == [
        "in", "deep", "deploy"]
    for args, kwargs in [((), {}), ((caffe.TEST, 0, [], weights, 1), {}),
                         ((caffe.TEST, 1), {"level": 1}), ((weights, caffe.TEST, 0), {})]:
        with pytest.raises(TypeError, match=r"Net\("):
            caffe.Net(path, *args, **kwargs)


def test_logs_at_info_to_stderr_by_default_as_pycaffe():
    # pycaffe's glog writes every line to stderr until init_log: net construction is visible
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}
    code = f"import caffe; caffe.Net({write(STAGED)!r}, caffe.TEST)"
    err = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stderr
    assert "] Network initialization done." in err and "Creating Layer in" in err
    quiet = subprocess.run([sys.executable, "-c", code], env={**env, "GLOG_minloglevel": "1"},
                           capture_output=True, text=True, timeout=120, check=True).stderr
    assert "Network initialization done." not in quiet
