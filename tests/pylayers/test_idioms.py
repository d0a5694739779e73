"""Real-world Python-layer idioms run unchanged: param_str as a dict or YAML, state kept across
iterations, methods called through net.layers[i], phase comparisons, the param_str_ spelling,
tops reshaped in setup, three-bottom losses, torch-tensor blobs, autograd with parameters."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.blob import TRANSFERS
from caffe.proto import caffe_pb2
from caffe.testing import GradientChecker, make_blobs

MODULE = textwrap.dedent('''
    import ast
    import numpy as np
    import torch
    import yaml
    import caffe


    class CountingData(caffe.Layer):
        """A data layer: param_str is a dict literal; keeps a cursor across forwards."""

        def setup(self, bottom, top):
            params = ast.literal_eval(self.param_str)
            self.batch = params["batch_size"]
            self.cursor = 0
            top[0].reshape(self.batch, 2)

        def reshape(self, bottom, top):
            pass

        def forward(self, bottom, top):
            values = np.arange(self.cursor, self.cursor + self.batch, dtype=np.float32)
            top[0].data[...] = values[:, None]
            self.cursor += self.batch

        def backward(self, top, propagate_down, bottom):
            pass

        def rewind(self):
            self.cursor = 0


    class YamlScale(caffe.Layer):
        """param_str in YAML; uses the py-faster-rcnn spelling param_str_ and checks phase."""

        def setup(self, bottom, top):
            cfg = yaml.safe_load(self.param_str_)
            self.scale = cfg["scale"] if self.phase == caffe.TRAIN else 1.0
            self.phase_name = str(self.phase)

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data * self.scale

        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = top[0].diff * self.scale


    class TripletLoss(caffe.Layer):
        """loss = mean(max(0, |a-p|^2 - |a-n|^2 + margin)); propagates to all three bottoms."""

        def setup(self, bottom, top):
            if len(bottom) != 3:
                raise Exception("triplet loss needs anchor, positive and negative")
            self.margin = 0.2

        def reshape(self, bottom, top):
            top[0].reshape(1)

        def forward(self, bottom, top):
            a, p, n = (b.data for b in bottom)
            self.dp, self.dn = a - p, a - n
            self.active = (np.sum(self.dp ** 2, 1) - np.sum(self.dn ** 2, 1) + self.margin) > 0
            per = np.sum(self.dp ** 2, 1) - np.sum(self.dn ** 2, 1) + self.margin
            top[0].data[...] = np.sum(per * self.active) / len(a)

        def backward(self, top, propagate_down, bottom):
            w = top[0].diff[0] * 2 * self.active[:, None] / len(self.active)
            grads = [w * (self.dp - self.dn), -w * self.dp, w * self.dn]
            for i in range(3):
                if propagate_down[i]:
                    bottom[i].diff[...] = grads[i]


    class TorchSquare(caffe.Layer):
        """Opts in to torch tensors: data/diff are torch tensors on the device."""
        torch_blobs = True

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            assert isinstance(bottom[0].data, torch.Tensor)
            top[0].data[...] = bottom[0].data ** 2

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = 2 * bottom[0].data * top[0].diff


    class AutogradAffine(caffe.Layer):
        """y = w * x + b with learnable w, b and no backward: autograd fills all diffs."""

        def setup(self, bottom, top):
            self.blobs.add_blob(*bottom[0].shape[1:])
            self.blobs.add_blob(1)
            self.blobs[0].data[...] = 1.5
            self.blobs[1].data[...] = 0.5

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].tensor = bottom[0].tensor * self.blobs[0].tensor + self.blobs[1].tensor
''')


@pytest.fixture(scope="module")
def idioms(tmp_path_factory):
    pytest.importorskip("yaml")
    folder = tmp_path_factory.mktemp("idioms")
    (folder / "idiom_layers.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    yield "idiom_layers"
    sys.path.remove(str(folder))
    sys.modules.pop("idiom_layers", None)


def net(text, phase=caffe.TRAIN):
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def test_data_layer_with_dict_param_str_keeps_state(idioms):
    n = net("""
    layer { name: "data" type: "Python" top: "x"
            python_param { module: "idiom_layers" layer: "CountingData"
                           param_str: "{'batch_size': 3}" } }
    """)
    assert n.blobs["x"].shape == (3, 2)  # reshaped in setup
    n.forward()
    n.forward()
    np.testing.assert_array_equal(n.blobs["x"].data[:, 0], [3, 4, 5])
    n.layers[0].rewind()  # a method called directly through net.layers[i]
    n.forward()
    np.testing.assert_array_equal(n.blobs["x"].data[:, 0], [0, 1, 2])


@pytest.mark.parametrize("phase,scale,name", [(caffe.TRAIN, 3.0, "TRAIN"),
                                              (caffe.TEST, 1.0, "TEST")])
def test_yaml_param_str_and_phase(idioms, phase, scale, name):
    n = net("""
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 } } }
    layer { name: "s" type: "Python" bottom: "x" top: "y"
            python_param { module: "idiom_layers" layer: "YamlScale" param_str: "scale: 3" } }
    """, phase)
    n.blobs["x"].data[...] = [1, 2]
    np.testing.assert_allclose(n.forward()["y"], [scale, 2 * scale])
    assert n.layers[1].phase_name == name


def test_three_bottom_loss_propagates_to_all(idioms):
    n = net("""
    force_backward: true
    layer { name: "input" type: "Input" top: "a" top: "p" top: "n"
            input_param { shape { dim: 4 dim: 3 } } }
    layer { name: "loss" type: "Python" bottom: "a" bottom: "p" bottom: "n" top: "loss"
            loss_weight: 1 python_param { module: "idiom_layers" layer: "TripletLoss" } }
    """)
    rng = np.random.default_rng(0)
    for name in "apn":
        n.blobs[name].data[...] = rng.standard_normal((4, 3))
    n.forward()
    n.backward()
    assert all(n.blobs[name].diff.any() for name in "apn")
    layer = n.layers[1]
    bottom = make_blobs(*(n.blobs[k].data.astype(np.float64) for k in "apn"))
    GradientChecker(1e-3, 1e-2).check_gradient(layer, bottom, [caffe.Blob(dtype=torch.float64)])


def test_torch_blobs_layer_sees_tensors_and_copies_nothing(idioms):
    n = net("""
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 3 } } }
    layer { name: "sq" type: "Python" bottom: "x" top: "y"
            python_param { module: "idiom_layers" layer: "TorchSquare" } }
    """)
    n.blobs["x"].data[...] = [1, -2, 3]
    TRANSFERS.reset()
    n._forward()
    n.blobs["y"].diff_tensor.fill_(1)
    n._backward()
    assert TRANSFERS.host_to_device == 0 and TRANSFERS.device_to_host == 0
    np.testing.assert_allclose(n.blobs["y"].data, [1, 4, 9])
    np.testing.assert_allclose(n.blobs["x"].diff, [2, -4, 6])


def test_autograd_layer_accumulates_parameter_diffs(idioms):
    n = net("""
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "aff" type: "Python" bottom: "x" top: "y"
            python_param { module: "idiom_layers" layer: "AutogradAffine" } }
    """)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    n.blobs["x"].data[...] = x
    n.forward()
    n.blobs["y"].diff[...] = 1.0
    n.backward()
    n.backward()  # param diffs accumulate, bottom diffs are overwritten
    np.testing.assert_allclose(n.params["aff"][0].diff, 2 * x.sum(0))
    np.testing.assert_allclose(n.params["aff"][1].diff, [2 * 6.0])
    np.testing.assert_allclose(n.blobs["x"].diff, np.full((2, 3), 1.5))


def test_autograd_layer_passes_the_gradient_checker(idioms):
    import idiom_layers

    lp = caffe_pb2.LayerParameter(name="aff", type="Python")
    layer = idiom_layers.AutogradAffine(lp)
    bottom = make_blobs(np.random.default_rng(1).standard_normal((2, 3)))
    GradientChecker(1e-3, 1e-3).check_gradient(layer, bottom, [caffe.Blob(dtype=torch.float64)])
