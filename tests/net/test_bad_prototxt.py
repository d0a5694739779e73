"""Malformed nets: syntax errors with file:line:col, unknown fields (strict and tolerant),
unknown types, unknown bottoms, binary files given as prototxt."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import caffe
from caffe.errors import CaffeError, NetDefinitionError, ProtoError, UnknownLayerTypeError

from nets import write

GOOD = """name: "n"
layer {
  name: "input"
  type: "Input"
  top: "x"
  input_param { shape { dim: 2 dim: 3 } }
}
layer {
  name: "relu"
  type: "ReLU"
  bottom: "x"
  top: "y"
}
"""


def test_syntax_error_names_file_line_and_column():
    path = write(GOOD.replace('type: "ReLU"', 'type: "ReLU" }}'))
    with pytest.raises(ProtoError, match=rf"{path}:10:\d+: cannot parse NetParameter"):
        caffe.Net(path, caffe.TEST)


def test_unknown_field_names_file_line_field_and_layer():
    path = write(GOOD.replace('type: "ReLU"', 'type: "ReLU"\n  relu6_param { clip: 6 }'))
    with pytest.raises(ProtoError, match=rf"{path}:11:3.*layer 'relu'.*relu6_param.*strict=False"):
        caffe.Net(path, caffe.TEST)


def test_unknown_field_of_a_v0_layer_names_the_layer_not_a_param_name():
    v0 = ('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
          'layers { layer { name: "conv1" type: "conv"\n datum_dims: 3 num_output: 2 }\n'
          '  bottom: "data" top: "conv1" }\n')
    path = write(v0)
    with pytest.raises(ProtoError, match=rf"{path}:3:2.*layer 'conv1'.*datum_dims"):
        caffe.Net(path, caffe.TEST)
    unnamed = GOOD.replace('name: "relu"\n  type: "ReLU"',
                           'type: "ReLU" param { name: "w" }\n  bad_field: 1')
    with pytest.raises(ProtoError, match=r"in layer #1 \(it has no name\): .*bad_field") as info:
        caffe.Net(write(unnamed), caffe.TEST)
    assert "'w'" not in str(info.value)


def test_tolerant_mode_skips_unknown_fields_and_keeps_param_blocks(caplog):
    text = GOOD.replace('type: "ReLU"',
                        'type: "ReLU"\n  relu6_param { clip: 6 mode: "x" v: 1 v: 2 }\n  junk: 3')
    path = write(text)
    net = caffe.Net(path, caffe.TEST, strict=False)
    assert net.layer_dict["relu"].extra_params == {
        "relu6_param": {"clip": 6, "mode": "x", "v": [1, 2]}, "junk": 3}
    net.blobs["x"].data[...] = -1
    assert not net.forward()["y"].any()


@pytest.mark.parametrize("escape", [r"\ ", r"\777"])
def test_tolerant_mode_refuses_unknown_escapes_in_skipped_fields(escape):
    path = write(GOOD.replace('type: "ReLU"',
                              f'type: "ReLU"\n  relu6_param {{ mode: "a{escape}" }}'))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning leaks out: an error instead
        with pytest.raises(ProtoError, match=rf"{path}.*escape"):
            caffe.Net(path, caffe.TEST, strict=False)


def test_unknown_type_lists_known_types_and_file():
    path = write(GOOD.replace('"ReLU"', '"ReLU6"'))
    with pytest.raises(UnknownLayerTypeError, match=rf"{path}.*'relu'.*'ReLU6'.*Known types:.*"
                                                    "ReLU.*register_layer"):
        caffe.Net(path, caffe.TEST)


@pytest.fixture
def relu6_type():
    """A fork-style ReLU6 registered for one test (torch ops, backward from autograd)."""

    @caffe.register_layer("ReLU6ForTest")
    class ReLU6(caffe.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].tensor = bottom[0].tensor.clamp(0, 6)

    yield "ReLU6ForTest"
    caffe.registry._REGISTRY.pop("ReLU6ForTest")


def test_register_layer_supplies_a_fork_type(relu6_type):
    path = write(GOOD.replace('"ReLU"', f'"{relu6_type}"'))
    net = caffe.Net(path, caffe.TEST)
    net.blobs["x"].data[...] = [[-1, 3, 9], [7, 0, 2]]
    np.testing.assert_array_equal(net.forward()["y"], [[0, 3, 6], [6, 0, 2]])


def test_in_place_autograd_fork_layer_backpropagates(relu6_type):
    text = GOOD.replace('"ReLU"', f'"{relu6_type}"').replace('top: "y"', 'top: "x"')
    net = caffe.Net(write("force_backward: true\n" + text), caffe.TRAIN)
    net.blobs["x"].data[...] = [[-1, 3, 9], [7, 0, 2]]
    out = net.forward()["x"]
    np.testing.assert_array_equal(out, [[0, 3, 6], [6, 0, 2]])
    net.blobs["x"].diff[...] = 1.0
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, [[0, 1, 0], [0, 1, 1]])


def test_tolerant_params_reach_the_right_layer_after_the_legacy_input_upgrade():
    text = """name: "legacy"
input: "x"
input_dim: 1 input_dim: 3 input_dim: 1 input_dim: 1
layer { name: "relu" type: "ReLU" bottom: "x" top: "y" upsample_param { scale: 3 } }
"""
    net = caffe.Net(write(text), caffe.TEST, strict=False)
    assert net.layer_dict["relu"].extra_params == {"upsample_param": {"scale": 3}}
    assert net.layer_dict["input"].extra_params == {}


def test_unknown_bottom_names_layer_and_index():
    path = write(GOOD.replace('bottom: "x"', 'bottom: "nope"'))
    with pytest.raises(NetDefinitionError, match="'relu'.*bottom 0.*'nope'"):
        caffe.Net(path, caffe.TEST)


def test_binary_file_as_prototxt():
    path = write("")
    open(path, "wb").write(b"\x08\x96\x01\xff\xfe\x00")
    with pytest.raises(ProtoError, match="neither a text nor a binary NetParameter"):
        caffe.Net(path, caffe.TEST)


def test_latin1_and_gbk_comments_are_read_as_caffe_reads_them(caplog, tmp_path, monkeypatch):
    """Caffe's text parser skips comment bytes unread: real files carry Latin-1 or GBK
    comments. They become U+FFFD, with a warning naming the line."""
    import logging

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "net.prototxt"
    path.write_bytes(GOOD.replace('name: "n"\n', 'name: "n"\n# r\xe9seau \xd6\xd0\xce\xc4\n'
                                  ).encode("latin-1"))
    solver = tmp_path / "solver.prototxt"
    solver.write_bytes(b'# r\xe9glage\nnet: "net.prototxt" base_lr: 0.1 lr_policy: "fixed"\n')
    logger = logging.getLogger("caffe")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="caffe"):
            net = caffe.Net(str(path), caffe.TEST)
            assert caffe.get_solver(str(solver)).param.base_lr == pytest.approx(0.1)
    finally:
        logger.removeHandler(caplog.handler)
    assert net._layer_names == ["input", "relu"]
    assert "net.prototxt: byte 13 (line 2) is not UTF-8" in caplog.text
    assert "solver.prototxt: byte 3 (line 1) is not UTF-8" in caplog.text


def test_missing_file():
    with pytest.raises(CaffeError, match="does not exist"):
        caffe.Net("/nonexistent/net.prototxt", caffe.TEST)


def test_bad_shape_in_layer_names_layer():
    text = GOOD.replace('type: "ReLU"', 'type: "InnerProduct"\n'
                        '  inner_product_param { num_output: 0 }')
    with pytest.raises(CaffeError, match="'relu'.*num_output must be positive, got 0"):
        caffe.Net(write(text), caffe.TEST)
