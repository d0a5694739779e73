"""Python layers inside nets: the classic Euclidean example, param_str and phase, learnable
blobs, propagate_down, autograd backward, and errors from user code."""

from __future__ import annotations

import numpy as np
import pytest

import caffe
from caffe.errors import BlobCountError, CaffeError, PythonLayerError

from nets import euclid_net, make_net, write


def test_python_euclidean_loss_matches_builtin(python_layer_module):
    net = make_net(euclid_net(python_layer_module, "force_backward: true"))
    ref = make_net(euclid_net(python_layer_module, "force_backward: true").replace(
        'type: "Python"', 'type: "EuclideanLoss"'))
    for j in range(2):
        ref.params["fc"][j].data[...] = net.params["fc"][j].data
    rng = np.random.default_rng(3)
    for n in (net, ref):
        n.blobs["data"].data[...] = rng.standard_normal((4, 3)) if n is net else \
            net.blobs["data"].data
        n.blobs["label"].data[...] = np.arange(8).reshape(4, 2) / 8.0
    out = net.forward()
    ref_out = ref.forward()
    assert float(out["loss"][0]) == pytest.approx(float(ref_out["loss"]), rel=1e-6)
    net.backward()
    ref.backward()
    for name in ("fc", "data", "label"):
        np.testing.assert_allclose(net.blobs[name].diff, ref.blobs[name].diff, rtol=1e-5)
    np.testing.assert_allclose(net.params["fc"][0].diff, ref.params["fc"][0].diff, rtol=1e-5)
    assert isinstance(net.layers[2], caffe.Layer) and net.layers[2].type == "Python"


def test_propagate_down_is_a_list_of_bools_and_label_gets_nothing(python_layer_module):
    net = make_net(euclid_net(python_layer_module))
    seen = []
    layer = net.layers[2]
    original = layer.backward

    def spy(top, propagate_down, bottom):
        seen.append(list(propagate_down))
        original(top, propagate_down, bottom)

    layer.backward = spy
    net.blobs["data"].data[...] = 1.0
    net.forward()
    net.backward()
    assert seen == [[True, False]]
    assert not net.blobs["label"].diff.any()


def test_param_str_and_phase(python_layer_module):
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 3 } } }
    layer { name: "p" type: "Python" bottom: "x" top: "y"
            python_param { module: "%s" layer: "ParamStr" param_str: "2.5" } }
    """ % python_layer_module
    net = make_net(text, caffe.TEST)
    layer = net.layers[1]
    assert layer.param_str == "2.5" and layer.param_str_ == "2.5"
    assert layer.seen_phase == caffe.TEST and str(layer.seen_phase) == "TEST"
    net.blobs["x"].data[...] = [1, 2, 3]
    np.testing.assert_allclose(net.forward()["y"], [2.5, 5, 7.5])


def test_learnable_python_params_are_updated_and_shared(python_layer_module):
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 3 } } }
    layer { name: "s1" type: "Python" bottom: "x" top: "y"
            param { name: "shared" } python_param { module: "%s" layer: "LearnedScale" } }
    layer { name: "s2" type: "Python" bottom: "y" top: "z"
            param { name: "shared" } python_param { module: "%s" layer: "LearnedScale" } }
    """ % (python_layer_module, python_layer_module)
    net = make_net(text)
    assert net.params["s1"][0] is net.params["s2"][0]
    assert len(net.learnable_params) == 1
    net.blobs["x"].data[...] = [1, 2, 3]
    net.forward()
    net.blobs["z"].diff[...] = 1.0
    net.backward()
    # z = w^2 x, dz/dw = 2 w x = 2 * 6 summed over x
    assert net.params["s1"][0].diff[0] == pytest.approx(12.0)


@pytest.mark.parametrize("top", ["y", "h"], ids=["new_top", "in_place"])
def test_autograd_backward_for_a_layer_without_backward(python_layer_module, top):
    """Also in place (top = bottom): ``top[0].tensor[...] = bottom[0].tensor ** 3`` then
    overwrites the tensor the power read, which autograd alone refuses to differentiate."""
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "copy" type: "Power" bottom: "x" top: "h" }
    layer { name: "cube" type: "Python" bottom: "h" top: "%s"
            python_param { module: "%s" layer: "Cube" } }
    """ % (top, python_layer_module)
    net = make_net(text)
    x = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    net.blobs["x"].data[...] = x
    np.testing.assert_allclose(net.forward()[top], x ** 3)
    net.blobs[top].diff[...] = [1, 2, 3, 4]
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, 3 * x ** 2 * [1, 2, 3, 4], rtol=1e-6)


def test_numpy_layer_without_backward_says_how_to_fix(python_layer_module):
    text = """
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "np2" type: "Python" bottom: "x" top: "y"
            python_param { module: "%s" layer: "NumpyNoBackward" } }
    """ % python_layer_module
    net = make_net(text)
    net.forward()
    with pytest.raises(PythonLayerError, match="'np2'.*defines no backward.*blob.tensor"):
        net.backward()


def test_exception_in_user_code_names_the_layer(python_layer_module):
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "bad" type: "Python" bottom: "x" top: "y"
            python_param { module: "%s" layer: "Broken" } }
    """ % python_layer_module
    net = make_net(text)
    with pytest.raises(PythonLayerError, match="'bad'.*Broken.*forward.*boom in user code") as e:
        net.forward()
    assert isinstance(e.value.__cause__, ValueError)


def test_exception_in_python_setup_names_the_layer(python_layer_module):
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "loss" type: "Python" bottom: "x" top: "y"
            python_param { module: "%s" layer: "EuclideanLoss" } }
    """ % python_layer_module
    with pytest.raises(PythonLayerError, match="'loss'.*setup.*Need two inputs"):
        make_net(text)


def test_declared_blob_counts_are_checked_before_setup(tmp_path, monkeypatch):
    (tmp_path / "declared_layers.py").write_text(
        "import caffe\n"
        "class Two(caffe.Layer):\n"
        "    exact_num_bottom_blobs = 2\n"
        "    def setup(self, bottom, top):\n"
        "        raise RuntimeError('setup must not run')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = """
    layer { name: "input" type: "Input" top: "fc8" input_param { shape { dim: 4 } } }
    layer { name: "loss" type: "Python" bottom: "fc8" top: "y"
            python_param { module: "declared_layers" layer: "Two" } }
    """
    with pytest.raises(BlobCountError,
                       match=r"Layer 'loss' \(Python\) takes 2 bottom blobs, got 1: \['fc8'\]"):
        make_net(text)


def test_missing_module_names_module_and_sys_path():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "p" type: "Python" bottom: "x" top: "y"
            python_param { module: "no_such_module_xyz" layer: "L" } }
    """
    with pytest.raises(PythonLayerError, match="no_such_module_xyz.*sys.path"):
        make_net(text)
    path = write(text)
    with pytest.raises(PythonLayerError, match=rf"^{path}: Layer 'p' \(Python\): cannot import"):
        caffe.Net(path, caffe.TEST)


def test_python_layers_can_be_refused(python_layer_module):
    with pytest.raises(PythonLayerError, match="allow_python_layers=False"):
        make_net(euclid_net(python_layer_module), allow_python_layers=False)


def test_builtin_blob_count_error_message():
    text = """
    layer { name: "input" type: "Input" top: "fc8" input_param { shape { dim: 4 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "fc8" top: "loss" }
    """
    with pytest.raises(BlobCountError,
                       match=r"Layer 'loss' \(EuclideanLoss\) takes 2 bottom blobs, got 1: "
                             r"\['fc8'\]"):
        make_net(text)


def test_errors_are_caffe_errors_from_a_file(python_layer_module):
    path = write(euclid_net(python_layer_module).replace('"Python"', '"Pythn"'))
    with pytest.raises(CaffeError, match="unknown type 'Pythn'.*Known types:.*InnerProduct"):
        caffe.Net(path, caffe.TRAIN)


LEARNER_MISTAKES = '''
import caffe

class Base(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff

class NoReshape(Base):
    def reshape(self, bottom, top):
        pass

class TopAsBlob(Base):
    def forward(self, bottom, top):
        top.data[...] = bottom[0].data

class OldBackward(Base):
    def backward(self, top, bottom):
        pass

class WrongDiffShape(Base):
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff[:, :1] + top[0].diff.T
'''


@pytest.mark.parametrize("cls, stage, hint", [
    ("NoReshape", "forward", r"tops: 'y' \(\); top \['y'\] has no shape yet: give each top its "
     r"shape in reshape\(\), e\.g\. top\[0\]\.reshape\(\*bottom\[0\]\.data\.shape\)"),
    ("TopAsBlob", "forward", r"bottom and top are lists of blobs, one per bottom / top line of "
     r"the layer: this layer has 1 bottom\(s\) and 1 top\(s\), so write bottom\[0\]\.data"),
    ("OldBackward", "backward", r"Caffe calls .*backward\(self, top, propagate_down, bottom\)"),
    ("WrongDiffShape", "backward", r"\(bottoms: 'x' \(2, 3\); tops: 'y' \(2, 3\)\)$"),
])
def test_a_python_layers_usual_mistakes_get_a_hint(tmp_path, monkeypatch, cls, stage, hint):
    """The mistakes of someone writing a first layer: a top never shaped in reshape(), top used
    as a blob instead of a list, backward without propagate_down, a diff of the wrong shape."""
    (tmp_path / "learner_layers.py").write_text(LEARNER_MISTAKES)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = make_net(f"""
    force_backward: true
    layer {{ name: "input" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
    layer {{ name: "mine" type: "Python" bottom: "x" top: "y"
             python_param {{ module: "learner_layers" layer: "{cls}" }} }}
    """)
    with pytest.raises(PythonLayerError, match=rf"Layer 'mine' .* failed in {stage}: .*{hint}"):
        net.forward()
        net.backward()


OWN_ATTRIBUTES = '''
import numpy as np
from caffe._caffe import Layer as BaseLayer, RawBlobVec, log


class Mine(BaseLayer):
    """Real layers keep their own state under names a framework might want: L2lossLayer's
    self.loss, BilinearLayer's self.param_propagate_down = True, PlotLoss's self.name."""

    def setup(self, bottom, top):
        assert isinstance(bottom, RawBlobVec) and isinstance(top, RawBlobVec)
        self.loss = 0.0
        self.name = "renamed by the layer"
        self.param_propagate_down = True
        self.loss_weights = "mine"
        self.need_backward = "mine too"
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = 3

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        assert (self.loss_weights, self.need_backward) == ("mine", "mine too")
        self.loss = float(self.blobs[0].data[0] * (bottom[0].data ** 2).sum() / 2)
        top[0].data[...] = self.loss

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down:
            self.blobs[0].diff[...] += top[0].diff[0] * (bottom[0].data ** 2).sum() / 2
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff[0] * self.blobs[0].data[0] * bottom[0].data
        log("backward of " + self.name)
'''


def test_a_python_layer_may_use_any_public_attribute_name(tmp_path, monkeypatch):
    """pycaffe's Layer has no attributes of its own but blobs, phase, param_str and type, so
    real layers set self.loss, self.name, self.param_propagate_down... The engine keeps its
    state under private names, and caffe._caffe gives the compiled module's names."""
    (tmp_path / "own_attributes.py").write_text(OWN_ATTRIBUTES)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = make_net("""
    force_backward: true
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "mine" type: "Python" bottom: "x" top: "loss" loss_weight: 2
            python_param { module: "own_attributes" layer: "Mine" } }
    """)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.blobs["x"].data[...] = x
    assert float(net.forward()["loss"][0]) == pytest.approx(3 * 55 / 2)
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, 2 * 3 * x)
    np.testing.assert_allclose(net.params["mine"][0].diff, [2 * 55 / 2])
    assert net.layer_dict["mine"].name == "renamed by the layer"
    assert net._layer_names[1] == "mine"


def test_a_module_whose_own_import_fails_is_told_apart_from_a_missing_one(tmp_path,
                                                                          monkeypatch):
    (tmp_path / "needs_frcnn.py").write_text("import fast_rcnn_config_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "p" type: "Python" bottom: "x" top: "y"
            python_param { module: "needs_frcnn" layer: "L" } }
    """
    with pytest.raises(PythonLayerError, match=r"module 'needs_frcnn' \(.*needs_frcnn\.py\) was "
                       r"found, but importing it failed: ModuleNotFoundError: No module named "
                       r"'fast_rcnn_config_xyz' \(a module it imports") as info:
        make_net(text)
    assert "sys.path =" not in str(info.value)


def test_module_main_is_explained_when_the_class_is_not_there():
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 4 } } }
    layer { name: "p" type: "Python" bottom: "x" top: "y"
            python_param { module: "__main__" layer: "NotDefinedHere" } }
    """
    with pytest.raises(PythonLayerError, match="has no class 'NotDefinedHere' \\(module "
                       "'__main__' is the program that builds the net.*my_layers.py"):
        make_net(text)
