"""Layer types from Caffe forks, supplied by the user: ``@caffe.register_layer("TypeName")``
on a Python layer class (the same API as ``type: "Python"`` layers) makes prototxts from forks
(YOLO's Upsample, MobileNet's ReLU6, SSD's Permute) build and run. A fork's own
``<type>_param { ... }`` block, unknown to caffe.proto, reaches the layer as
``self.extra_params`` when the net is loaded with ``strict=False``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import caffe
from caffe import registry
from caffe.errors import CaffeError, UnknownLayerTypeError
from caffe.proto import caffe_pb2
from caffe.testing.gradient_check import GradientChecker, make_blobs


def _define_fork_layers() -> dict[str, type]:
    """The three fork layers, as a user would write them."""

    @caffe.register_layer("Upsample")
    class Upsample(caffe.Layer):
        """Nearest-neighbour upsampling by an integer ``upsample_param { scale }``."""

        exact_num_bottom_blobs = 1
        exact_num_top_blobs = 1

        def setup(self, bottom, top):
            self.scale = int(self.extra_params.get("upsample_param", {}).get("scale", 2))

        def reshape(self, bottom, top):
            n, c, h, w = bottom[0].shape
            top[0].reshape(n, c, h * self.scale, w * self.scale)

        def forward(self, bottom, top):
            x = bottom[0].tensor
            top[0].tensor = x.repeat_interleave(self.scale, 2).repeat_interleave(self.scale, 3)

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                n, c, h, w = bottom[0].shape
                dy = top[0].diff_tensor.reshape(n, c, h, self.scale, w, self.scale)
                bottom[0].diff_tensor = dy.sum(dim=(3, 5))

    @caffe.register_layer("ReLU6")
    class ReLU6(caffe.Layer):
        """min(max(x, 0), 6), also in place (top is bottom): the backward then only sees the
        output, which is inside (0, 6) exactly where the input was."""

        exact_num_bottom_blobs = 1
        exact_num_top_blobs = 1

        def reshape(self, bottom, top):
            if top[0] is not bottom[0]:
                top[0].reshape(bottom[0].shape)

        def forward(self, bottom, top):
            top[0].tensor = torch.clamp(bottom[0].tensor, 0.0, 6.0)

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                y = top[0].tensor
                bottom[0].diff_tensor = top[0].diff_tensor * ((y > 0) & (y < 6))

    @caffe.register_layer("Permute")
    class Permute(caffe.Layer):
        """Reorder the axes: ``permute_param { order: 0 order: 2 order: 3 order: 1 }``."""

        exact_num_bottom_blobs = 1
        exact_num_top_blobs = 1

        def setup(self, bottom, top):
            order = self.extra_params.get("permute_param", {}).get("order", [])
            order = [order] if isinstance(order, int) else list(order)
            self.order = order + [a for a in range(len(bottom[0].shape)) if a not in order]

        def reshape(self, bottom, top):
            top[0].reshape([bottom[0].shape[a] for a in self.order])

        def forward(self, bottom, top):
            # no backward written: autograd derives it from these torch ops
            top[0].tensor = bottom[0].tensor.permute(self.order).contiguous()

    return {"Upsample": Upsample, "ReLU6": ReLU6, "Permute": Permute}


@pytest.fixture
def fork_layers():
    saved = dict(registry._REGISTRY)
    try:
        yield _define_fork_layers()
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)


FORK_NET = """
name: "fork_net"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
layer { name: "target" type: "DummyData" top: "target"
        dummy_data_param { shape { dim: 2 dim: 12 dim: 15 dim: 4 } } }
layer {
  name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 4 }
                      bias_filler { type: "constant" value: 1 } }
}
layer { name: "relu6" type: "ReLU6" bottom: "conv" top: "conv" }
layer { name: "up" type: "Upsample" bottom: "conv" top: "up" upsample_param { scale: 3 } }
layer {
  name: "perm" type: "Permute" bottom: "up" top: "perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 }
}
layer { name: "loss" type: "EuclideanLoss" bottom: "perm" bottom: "target" top: "loss" }
"""


def _fork_net(tmp_path, strict: bool = False) -> caffe.Net:
    path = tmp_path / "fork.prototxt"
    path.write_text(FORK_NET)
    return caffe.Net(str(path), caffe.TRAIN, strict=strict)


def test_registered_types_are_listed(fork_layers):
    types = caffe.layer_type_list()
    for name in ("Upsample", "ReLU6", "Permute", "Convolution", "InnerProduct"):
        assert name in types
    assert fork_layers["ReLU6"].type_name == "ReLU6"


def test_fork_net_runs_forward_like_numpy(fork_layers, tmp_path):
    net = _fork_net(tmp_path)
    kinds = {name: layer.type for name, layer in zip(net._layer_names, net.layers)}
    assert (kinds["relu6"], kinds["up"], kinds["perm"]) == ("ReLU6", "Upsample", "Permute")
    x = np.random.RandomState(0).randn(2, 3, 4, 5).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    w, b = (p.data for p in net.params["conv"])
    conv = np.einsum("oc,nchw->nohw", w.reshape(4, 3), x) + b[None, :, None, None]
    relu6 = np.clip(conv, 0, 6)
    assert (relu6 == 6).any() and (relu6 == 0).any()  # both clips are exercised
    up = relu6.repeat(3, axis=2).repeat(3, axis=3)
    np.testing.assert_allclose(net.blobs["conv"].data, relu6, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.blobs["up"].data, up, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.blobs["perm"].data, up.transpose(0, 2, 3, 1), rtol=1e-5,
                               atol=1e-5)
    assert net.blobs["perm"].shape == (2, 12, 15, 4)


def test_fork_net_backward_reaches_the_conv_weights(fork_layers, tmp_path):
    net = _fork_net(tmp_path)
    x = np.random.RandomState(1).randn(2, 3, 4, 5).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    net.backward()
    perm_diff = net.blobs["perm"].diff
    up_diff = perm_diff.transpose(0, 3, 1, 2).reshape(2, 4, 4, 3, 5, 3).sum(axis=(3, 5))
    conv_out = net.blobs["conv"].data
    pre_diff = up_diff * ((conv_out > 0) & (conv_out < 6))
    np.testing.assert_allclose(net.params["conv"][1].diff, pre_diff.sum(axis=(0, 2, 3)),
                               rtol=1e-4, atol=1e-5)


def test_fork_param_block_needs_tolerant_loading(fork_layers, tmp_path):
    with pytest.raises(CaffeError, match="upsample_param") as err:
        _fork_net(tmp_path, strict=True)
    assert "strict=False" in str(err.value)
    assert "not a BVLC Caffe type" not in str(err.value)  # Upsample is registered here


def test_strict_error_on_a_fork_layer_also_names_its_unregistered_type(tmp_path):
    path = tmp_path / "interp.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                    'layer { name: "zoom" type: "Interp" bottom: "x" top: "y"\n'
                    '        interp_param { zoom_factor: 2 } }\n')
    with pytest.raises(CaffeError, match=r"prototxt:3:9: .* layer 'zoom'.*interp_param.*"
                       r"strict=False; its type 'Interp' is not a BVLC Caffe type either: "
                       r"supply it with @caffe.register_layer\('Interp'\)"):
        caffe.Net(str(path), caffe.TEST)


@pytest.mark.parametrize("name, shape, extra", [
    ("Upsample", (2, 2, 3, 2), {"upsample_param": {"scale": 2}}),
    ("Permute", (2, 3, 2, 4), {"permute_param": {"order": [0, 3, 1, 2]}}),
    ("ReLU6", (3, 4, 5), {}),
])
def test_fork_layer_gradients(fork_layers, name, shape, extra):
    rng = np.random.RandomState(2)
    x = rng.uniform(-3, 9, shape)
    layer = fork_layers[name](caffe_pb2.LayerParameter(name=name.lower(), type=name),
                              caffe.TRAIN)
    layer.extra_params = extra
    bottom, top = make_blobs(x), make_blobs(np.zeros(1))
    checker = GradientChecker(1e-3, 1e-3)
    if name == "ReLU6":
        x[np.abs(x - 6) < 0.01] = 5.9  # keep away from the upper kink (the checker knows 0)
        bottom = make_blobs(x)
        checker = GradientChecker(1e-3, 1e-3, kink=0.0, kink_range=1e-2)
    checker.check_gradient(layer, bottom, top)


def test_netspec_writes_fork_types(fork_layers):
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 2, 3, 3]))
    n.act = caffe.layers.ReLU6(n.data, in_place=True)
    n.up = caffe.layers.Upsample(n.act)
    net = caffe.Net(n.to_proto(), caffe.TEST)
    net.blobs["data"].data[...] = np.arange(18).reshape(1, 2, 3, 3) - 5
    out = net.forward()["up"]
    assert out.shape == (1, 2, 6, 6)
    assert out.min() == 0 and out.max() == 6


def test_unregistered_fork_type_says_how_to_register(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }'
                    '\nlayer { name: "act" type: "HardSwishFork" bottom: "x" top: "y" }\n')
    with pytest.raises(UnknownLayerTypeError) as e:
        caffe.Net(str(path), caffe.TEST)
    msg = str(e.value)
    assert "HardSwishFork" in msg and "'act'" in msg and "register_layer" in msg


def test_register_layer_needs_a_layer_class():
    with pytest.raises(CaffeError, match="derived from caffe.Layer"):
        caffe.register_layer("NotALayer")(object)


def test_registering_replaces_and_cleanup_restores(fork_layers):
    class Other(caffe.Layer):
        pass

    assert caffe.register_layer("Upsample")(Other) is Other
    assert registry.layer_class("Upsample") is Other
