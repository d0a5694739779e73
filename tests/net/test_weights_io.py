"""Weights in and out: caffemodel and HDF5 round trips, matching by layer name, shape errors,
legacy 4-D shapes, corrupt files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import caffe
from caffe.errors import FileFormatError, ShapeMismatchError
from caffe.proto import caffe_pb2

from nets import LINREG, make_net


def _randomize(net, seed=0):
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.standard_normal(b.shape)


@pytest.mark.parametrize("fmt", ["caffemodel", "h5"])
def test_save_and_copy_from_round_trip(tmp_path, fmt):
    net = make_net(LINREG)
    _randomize(net)
    path = str(tmp_path / f"w.{fmt}")
    if fmt == "h5":
        net.save_hdf5(path)
    else:
        net.save(path)
    other = make_net(LINREG)
    other.copy_from(path)
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    third = caffe.Net(_write_net(tmp_path), caffe.TEST, weights=path)
    np.testing.assert_array_equal(third.params["fc"][0].data, net.params["fc"][0].data)
    fourth = caffe.Net(_write_net(tmp_path), path, caffe.TEST)  # legacy argument order
    np.testing.assert_array_equal(fourth.params["fc"][1].data, net.params["fc"][1].data)


def _write_net(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(LINREG)
    return str(p)


def test_saved_caffemodel_is_a_plain_netparameter(tmp_path):
    net = make_net(LINREG)
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    param = caffe_pb2.NetParameter.FromString(open(path, "rb").read())
    assert [lp.name for lp in param.layer] == ["input", "fc", "loss"]
    fc = param.layer[1]
    assert list(fc.blobs[0].shape.dim) == [2, 3] and len(fc.blobs[0].data) == 6
    assert len(fc.blobs[0].diff) == 0


def test_unknown_source_layers_are_ignored_and_shape_mismatch_raises(tmp_path):
    param = caffe_pb2.NetParameter()
    extra = param.layer.add(name="not_in_net", type="InnerProduct")
    extra.blobs.add().shape.dim.extend([1])
    extra.blobs[0].data.append(1.0)
    bad = param.layer.add(name="fc", type="InnerProduct")
    bad.blobs.add().shape.dim.extend([3, 3])
    bad.blobs[0].data.extend([0.0] * 9)
    bad.blobs.add().shape.dim.extend([2])
    bad.blobs[1].data.extend([0.0] * 2)
    path = str(tmp_path / "bad.caffemodel")
    open(path, "wb").write(param.SerializeToString())
    net = make_net(LINREG)
    with pytest.raises(ShapeMismatchError, match=r"layer 'fc'.*3 3.*2 3"):
        net.copy_from(path)


def test_a_caffemodel_with_v1_and_current_layers_is_read_as_its_v1_net(tmp_path):
    # the rule of the net upgrade: the 'layer' entries beside V1 'layers' are ignored
    net = make_net(LINREG)
    _randomize(net)
    saved = net.to_proto()
    mixed = caffe_pb2.NetParameter()
    v1 = mixed.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    v1.blobs.extend(saved.layer[[lp.name for lp in saved.layer].index("fc")].blobs)
    current = mixed.layer.add(name="fc", type="InnerProduct")
    current.blobs.add().shape.dim.extend([7])  # its shape would be refused if it were read
    current.blobs[0].data.extend([0.0] * 7)
    path = str(tmp_path / "mixed.caffemodel")
    open(path, "wb").write(mixed.SerializeToString())
    other = make_net(LINREG)
    other.copy_from(path)
    np.testing.assert_array_equal(other.params["fc"][0].data, net.params["fc"][0].data)


def test_legacy_4d_blob_shape_is_accepted(tmp_path):
    net = make_net(LINREG)
    param = caffe_pb2.NetParameter()
    lp = param.layer.add(name="fc")
    w = lp.blobs.add(num=1, channels=1, height=2, width=3)
    w.data.extend(range(6))
    b = lp.blobs.add(num=1, channels=1, height=1, width=2)
    b.data.extend([7, 8])
    path = str(tmp_path / "legacy.caffemodel")
    open(path, "wb").write(param.SerializeToString())
    net.copy_from(path)
    np.testing.assert_array_equal(net.params["fc"][0].data, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(net.params["fc"][1].data, [7, 8])


def test_blob_with_fewer_values_than_its_shape_is_rejected(tmp_path):
    param = caffe_pb2.NetParameter()
    lp = param.layer.add(name="fc")
    lp.blobs.add().shape.dim.extend([2, 3])
    lp.blobs[0].data.extend([1.0])
    lp.blobs.add().shape.dim.extend([2])
    lp.blobs[1].data.extend([1.0, 2.0])
    path = str(tmp_path / "short.caffemodel")
    open(path, "wb").write(param.SerializeToString())
    with pytest.raises(FileFormatError, match=r"short.caffemodel.*'fc' blob 0.*6 values.*holds 1"):
        make_net(LINREG).copy_from(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "empty_dir"])
def test_corrupt_or_missing_caffemodel_names_the_file(tmp_path, damage):
    net = make_net(LINREG)
    good = str(tmp_path / "good.caffemodel")
    net.save(good)
    data = open(good, "rb").read()
    path = str(tmp_path / "bad.caffemodel")
    if damage == "truncate":
        open(path, "wb").write(data[: len(data) // 2])
    elif damage == "garbage":
        open(path, "wb").write(b"\xff\xfe\x00garbage" * 10)
    elif damage == "empty_dir":
        os.mkdir(path)
    with pytest.raises(FileFormatError, match="bad.caffemodel"):
        net.copy_from(path)


def test_share_with_shares_memory():
    a, b = make_net(LINREG), make_net(LINREG)
    b.share_with(a)
    a.params["fc"][0].data[...] = 3.0
    assert (b.params["fc"][0].data == 3.0).all()


def test_python_layer_params_are_saved_and_loaded(tmp_path, python_layer_module):
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "scale" type: "Python" bottom: "x" top: "y"
            python_param { module: "%s" layer: "LearnedScale" } }
    """ % python_layer_module
    net = make_net(text)
    net.params["scale"][0].data[...] = 2.5
    path = str(tmp_path / "py.caffemodel")
    net.save(path)
    other = make_net(text)
    assert other.params["scale"][0].data[0] == 1.0
    other.copy_from(path)
    assert other.params["scale"][0].data[0] == 2.5


def test_a_python_layer_finds_the_definitions_blobs_before_its_setup(tmp_path, monkeypatch):
    # Caffe's Layer constructor fills blobs_ from the LayerParameter before the Python setup
    (tmp_path / "seen_blobs.py").write_text(
        "import caffe\n"
        "class Keep(caffe.Layer):\n"
        "    def setup(self, bottom, top):\n"
        "        if not len(self.blobs):  # a fresh layer: initialize\n"
        "            self.blobs.add_blob(1).data[...] = 1.0\n"
        "    def reshape(self, bottom, top):\n"
        "        top[0].reshape(*bottom[0].data.shape)\n"
        "    def forward(self, bottom, top):\n"
        "        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = """
    layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "keep" type: "Python" bottom: "x" top: "y"
            python_param { module: "seen_blobs" layer: "Keep" } %s }
    """
    assert _keep_values(make_net(text % "")) == [[1.0]]
    assert _keep_values(make_net(text % "blobs { shape { dim: 1 } data: 3 }")) == [[3.0]]


def _keep_values(net: caffe.Net) -> list:
    return [b.data.tolist() for b in net.params["keep"]]


NAMES_NET = """
layer { type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "conv1/bn" type: "InnerProduct" bottom: "x" top: "a"
  inner_product_param { num_output: 2 } }
layer { name: "conv1" type: "InnerProduct" bottom: "x" top: "b"
  inner_product_param { num_output: 4 } }
layer { name: "act" type: "ReLU" bottom: "a" top: "a" }
layer { name: "act" type: "ReLU" bottom: "b" top: "b" }
"""


def test_hdf5_weights_with_nested_repeated_and_empty_layer_names(tmp_path):
    """MobileNet's 'conv1' and 'conv1/bn' nest as HDF5 groups; repeated or empty names of
    layers without parameters (HED's five 'crop' layers) need no group of their own."""
    net = make_net(NAMES_NET)
    _randomize(net)
    path = str(tmp_path / "w.h5")
    net.save_hdf5(path)
    other = make_net(NAMES_NET)
    other.copy_from(path)
    for name in ("conv1", "conv1/bn"):
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    clash = NAMES_NET.replace('name: "conv1" type', 'name: "conv1/bn" type')
    with pytest.raises(caffe.errors.NetDefinitionError,
                       match=r"w2\.h5' as HDF5: layer #\d+ \(InnerProduct\) is the second layer "
                             r"named 'conv1/bn' with parameters"):
        make_net(clash).save_hdf5(str(tmp_path / "w2.h5"))
    assert not os.path.exists(tmp_path / "w2.h5")


def _caffemodel(tmp_path, param: caffe_pb2.NetParameter) -> str:
    path = str(tmp_path / "w.caffemodel")
    open(path, "wb").write(param.SerializeToString())
    return path


def _fc_layer(param: caffe_pb2.NetParameter, value: float) -> caffe_pb2.LayerParameter:
    lp = param.layer.add(name="fc", type="InnerProduct")
    for shape in ([2, 3], [2]):
        bp = lp.blobs.add()
        bp.shape.dim.extend(shape)
        bp.data.extend([value] * int(np.prod(shape)))
    return lp


def test_binary_weights_follow_caffes_copy_rules(tmp_path):
    # a saved diff (snapshot_diff) is restored with the data
    param = caffe_pb2.NetParameter()
    lp = _fc_layer(param, 1.0)
    lp.blobs[0].diff.extend([0.5] * 6)
    net = make_net(LINREG)
    net.copy_from(_caffemodel(tmp_path, param))
    assert (net.params["fc"][0].diff == 0.5).all() and (net.params["fc"][1].diff == 0).all()
    # the legacy 4-D fields win over a BlobShape when a blob has both (Blob::FromProto)
    lp.blobs[0].num, lp.blobs[0].channels, lp.blobs[0].height, lp.blobs[0].width = 1, 1, 2, 3
    lp.blobs[0].shape.dim[:] = [6]
    make_net(LINREG).copy_from(_caffemodel(tmp_path, param))
    # a layer of the file without blobs for a layer that has some is an error, not a skip
    empty = caffe_pb2.NetParameter()
    empty.layer.add(name="fc", type="InnerProduct")
    with pytest.raises(ShapeMismatchError, match="Incompatible number of blobs for layer 'fc'"):
        make_net(LINREG).copy_from(_caffemodel(tmp_path, empty))


def test_two_layers_of_one_name_take_the_weights_as_in_caffe(tmp_path):
    text = LINREG + (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc2" '
        'inner_product_param { num_output: 2 } }')
    param = caffe_pb2.NetParameter()
    _fc_layer(param, 4.0)
    path = _caffemodel(tmp_path, param)
    net = make_net(text)
    net.copy_from(path)  # binary: the first layer of that name (CopyTrainedLayersFrom)
    first, second = (layer.blobs[0].data for layer in net.layers if layer.blobs)
    assert (first == 4.0).all() and not (second == 4.0).all()
    source = make_net(LINREG)
    source.params["fc"][0].data[...] = 9.0
    net.share_with(source)  # into the first layer of that name (ShareTrainedLayersWith)
    first, second = (layer.blobs[0].data for layer in net.layers if layer.blobs)
    assert (first == 9.0).all() and not (second == 9.0).all()


def test_hdf5_diffs_of_shared_params_are_written(tmp_path):
    text = LINREG + ('layer { name: "fc_b" type: "InnerProduct" bottom: "data" top: "fc_b" '
                     'param { name: "w" } param { name: "b" } '
                     'inner_product_param { num_output: 2 } }')
    text = text.replace('top: "fc"\n', 'top: "fc"\n param { name: "w" } param { name: "b" }\n')
    net = make_net(text)
    path = str(tmp_path / "w.h5")
    net.save_hdf5(path, write_diff=True)
    import h5py

    with h5py.File(path) as f:
        assert set(f["data"]) >= {"fc"} and len(f["data/fc_b"]) == 0  # data once, by the owner
        assert set(f["diff/fc_b"]) == {"0", "1"}  # diffs of every layer (Net::ToHDF5)
