"""Upgrades of old net and solver formats (caffe.proto.upgrade): V0 -> V1 with padding layers
folded into conv/pool, data-transformation fields, V1 -> V2, legacy inputs, BatchNorm lr_mult,
solver_type, and the errors for input Caffe aborts on."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.errors import CaffeError, FileFormatError, ProtoError, SolverError
from caffe.proto import caffe_pb2, upgrade

V1 = caffe_pb2.V1LayerParameter


def net_from(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(textwrap.dedent(text), caffe_pb2.NetParameter())


def upgraded(text: str, problems: list | None = None) -> caffe_pb2.NetParameter:
    param = net_from(text)
    assert upgrade.upgrade_net_as_needed(param, "<test>", problems)
    return param


# ---------------------------------------------------------------------------- V1 -> V2
def test_every_v1_enum_value_has_a_type_name():
    values = {v.number for v in V1.LayerType.DESCRIPTOR.values}
    assert set(upgrade.V1_LAYER_TYPES) == values
    assert upgrade.V1_LAYER_TYPES[V1.NONE] == ""
    spot = {V1.CONVOLUTION: "Convolution", V1.INNER_PRODUCT: "InnerProduct",
            V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.IM2COL: "Im2col", V1.TANH: "TanH",
            V1.HDF5_DATA: "HDF5Data", V1.ABSVAL: "AbsVal", V1.BNLL: "BNLL",
            V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.LRN: "LRN"}
    for enum, name in spot.items():
        assert upgrade.V1_LAYER_TYPES[enum] == name


def test_v1_type_names_are_registered_types():
    known = set(caffe.layer_type_list())
    # data layers reading images need other engineers' modules; the rest must all be there
    missing = {n for n in upgrade.V1_LAYER_TYPES.values() if n and n not in known}
    assert missing <= {"ImageData", "WindowData", "Data"}


def test_v1_layer_fields_move_to_param_specs():
    param = upgraded("""
        name: "n"
        layers {
          name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
          param: "w_shared" param: "b_shared"
          blob_share_mode: PERMISSIVE
          blobs_lr: 1 blobs_lr: 2
          weight_decay: 1 weight_decay: 0
          loss_weight: 0.5
          include { phase: TRAIN stage: "s" }
          inner_product_param { num_output: 3 bias_term: false }
          blobs { data: 1 data: 2 shape { dim: 2 } }
        }
        layers { name: "relu" type: RELU bottom: "y" top: "y" exclude { phase: TEST }
                 relu_param { negative_slope: 0.1 } }
    """)
    assert not param.layers
    ip, relu = param.layer
    assert (ip.name, ip.type, list(ip.bottom), list(ip.top)) == ("ip", "InnerProduct", ["x"],
                                                                ["y"])
    assert [(p.name, p.lr_mult, p.decay_mult) for p in ip.param] == [
        ("w_shared", 1.0, 1.0), ("b_shared", 2.0, 0.0)]
    assert ip.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not ip.param[1].HasField("share_mode")
    assert list(ip.loss_weight) == [0.5]
    assert ip.include[0].phase == caffe.TRAIN and list(ip.include[0].stage) == ["s"]
    assert ip.inner_product_param.num_output == 3 and not ip.inner_product_param.bias_term
    assert list(ip.blobs[0].data) == [1.0, 2.0]
    assert relu.type == "ReLU" and relu.exclude[0].phase == caffe.TEST
    assert relu.relu_param.negative_slope == pytest.approx(0.1)
    assert not relu.param


def test_v1_param_specs_are_padded_to_the_longest_list():
    param = upgraded("""
        layers { name: "c" type: CONVOLUTION blobs_lr: 1 blobs_lr: 2 weight_decay: 3
                 convolution_param { num_output: 1 kernel_size: 1 } }
    """)
    specs = param.layer[0].param
    assert len(specs) == 2
    assert specs[0].decay_mult == 3 and not specs[1].HasField("decay_mult")


def test_every_v1_param_message_is_copied():
    v1 = V1(name="l", type=V1.SPLIT)
    fields = [f for f in V1.DESCRIPTOR.fields if f.name.endswith("_param")]
    for f in fields:
        getattr(v1, f.name).SetInParent()
    lp = upgrade.upgrade_v1_layer(v1)
    for f in fields:
        assert lp.HasField(f.name), f.name


def test_v1_none_type_gives_empty_type():
    param = upgraded('layers { name: "a" type: NONE }')
    assert param.layer[0].type == ""


def test_both_layers_and_layer_keeps_only_upgraded_v1():
    problems: list[str] = []
    param = upgraded("""
        layer { name: "new" type: "ReLU" }
        layers { name: "old" type: TANH }
    """, problems)
    assert [lp.name for lp in param.layer] == ["old"]
    assert problems and "ignored" in problems[0]


def test_binary_v1_layer_with_unknown_type_number_is_named():
    # a V1 layer whose type enum holds 99, as a fork's caffemodel would
    layer = V1(name="up").SerializeToString() + bytes([5 << 3, 99])
    data = bytes([(2 << 3) | 2, len(layer)]) + layer
    param = caffe_pb2.NetParameter.FromString(data)
    with pytest.raises(ProtoError, match=r"V1 layer 0 'up' has type = 99.*LayerType"):
        upgrade.upgrade_net_as_needed(param, "fork.caffemodel")


def test_text_v1_layer_with_unknown_type_names_file_line_and_layer(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text('name: "x"\ninput: "data"\ninput_dim: 1 input_dim: 1 input_dim: 2 '
                    'input_dim: 2\nlayers {\n  name: "up"\n  type: UPSAMPLE\n  bottom: "data"\n'
                    '  top: "up"\n}\n')
    with pytest.raises(ProtoError) as e:
        caffe.Net(str(path), caffe.TEST)
    msg = str(e.value)
    assert f"{path}:6" in msg and "UPSAMPLE" in msg and "'up'" in msg


# ---------------------------------------------------------------------------- V0 -> V1 -> V2
V0_NET = """
    name: "TinyV0"
    input: "data"
    input_dim: 2 input_dim: 3 input_dim: 9 input_dim: 9
    layers {
      layer { name: "pad1" type: "padding" pad: 2 }
      bottom: "data" top: "pad1"
    }
    layers {
      layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 group: 1
              biasterm: true weight_filler { type: "gaussian" std: 0.01 }
              blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
      bottom: "pad1" top: "conv1"
    }
    layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
    layers {
      layer { name: "pad2" type: "padding" pad: 1 }
      bottom: "conv1" top: "pad2"
    }
    layers {
      layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
      bottom: "pad2" top: "pool1"
    }
    layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.001 beta: 0.5 k: 2 }
             bottom: "pool1" top: "norm1" }
    layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.25 }
             bottom: "norm1" top: "norm1" }
    layers { layer { name: "ip" type: "innerproduct" num_output: 5
                     bias_filler { type: "constant" value: 0.5 } }
             bottom: "norm1" top: "ip" }
    layers { layer { name: "prob" type: "softmax" } bottom: "ip" top: "prob" }
"""


def test_v0_net_upgrades_to_current_format_with_padding_folded():
    param = upgraded(V0_NET)
    assert param.name == "TinyV0"
    assert not param.layers and not param.input
    names = [lp.name for lp in param.layer]
    assert names == ["input", "conv1", "relu1", "pool1", "norm1", "drop", "ip", "prob"]
    types = [lp.type for lp in param.layer]
    assert types == ["Input", "Convolution", "ReLU", "Pooling", "LRN", "Dropout",
                     "InnerProduct", "Softmax"]
    conv = param.layer[1]
    assert list(conv.bottom) == ["data"]
    cp = conv.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.stride), list(cp.pad)) == (
        4, [3], [2], [2])
    assert cp.group == 1 and cp.HasField("bias_term") and cp.bias_term
    assert cp.weight_filler.type == "gaussian" and cp.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    pool = param.layer[3]
    assert list(pool.bottom) == ["conv1"]
    pp = pool.pooling_param
    assert (pp.pool, pp.kernel_size, pp.stride, pp.pad) == (
        caffe_pb2.PoolingParameter.AVE, 3, 2, 1)
    lrn = param.layer[4].lrn_param
    assert (lrn.local_size, lrn.k) == (3, 2) and lrn.alpha == pytest.approx(0.001)
    assert param.layer[5].dropout_param.dropout_ratio == 0.25
    assert param.layer[6].inner_product_param.bias_filler.value == 0.5
    assert list(param.layer[0].input_param.shape[0].dim) == [2, 3, 9, 9]


def test_v0_net_builds_and_runs():
    net = caffe.Net(net_from(V0_NET), caffe.TEST)
    assert net.blobs["conv1"].shape == (2, 4, 6, 6)  # (9 + 2*2 - 3) // 2 + 1
    assert net.blobs["pool1"].shape == (2, 4, 4, 4)  # ceil((6 + 2 - 3) / 2) + 1
    net.blobs["data"].data[...] = np.random.RandomState(0).randn(2, 3, 9, 9)
    prob = net.forward()["prob"]
    np.testing.assert_allclose(prob.sum(1), 1, rtol=1e-5)


def test_v0_padding_layer_feeding_two_convs_pads_both():
    param = upgraded("""
        input: "x" input_dim: 1 input_dim: 1 input_dim: 5 input_dim: 5
        layers { layer { name: "pad" type: "padding" pad: 3 } bottom: "x" top: "p" }
        layers { layer { name: "a" type: "conv" num_output: 1 kernelsize: 1 } bottom: "p"
                 top: "a" }
        layers { layer { name: "b" type: "pool" kernelsize: 2 } bottom: "p" top: "b" }
    """)
    a, b = param.layer[1:]
    assert list(a.bottom) == ["x"] and list(a.convolution_param.pad) == [3]
    assert list(b.bottom) == ["x"] and b.pooling_param.pad == 3


def test_v0_data_layer_fields_go_to_data_and_transform_params():
    param = upgraded("""
        layers {
          layer { name: "d" type: "data" source: "db" meanfile: "mean.binaryproto"
                  batchsize: 16 cropsize: 227 mirror: true scale: 0.5 rand_skip: 7 }
          top: "data" top: "label"
        }
        layers {
          layer { name: "w" type: "window_data" source: "w.txt" batchsize: 2
                  det_fg_threshold: 0.6 det_bg_threshold: 0.4 det_fg_fraction: 0.3
                  det_context_pad: 16 det_crop_mode: "square" }
          top: "w" top: "wl"
        }
        layers { layer { name: "i" type: "images" source: "list.txt" new_height: 8
                         new_width: 9 shuffle_images: true batchsize: 3 } top: "i" top: "il" }
        layers { layer { name: "c" type: "concat" concat_dim: 2 } bottom: "i" bottom: "i"
                 top: "c" }
    """)
    d, w, i, c = param.layer
    assert d.type == "Data"
    assert (d.data_param.source, d.data_param.batch_size, d.data_param.rand_skip) == (
        "db", 16, 7)
    tp = d.transform_param
    assert (tp.mean_file, tp.crop_size, tp.mirror, tp.scale) == (
        "mean.binaryproto", 227, True, 0.5)
    wp = w.window_data_param
    assert w.type == "WindowData" and wp.context_pad == 16 and wp.crop_mode == "square"
    assert wp.fg_threshold == pytest.approx(0.6) and wp.fg_fraction == pytest.approx(0.3)
    ip = i.image_data_param
    assert i.type == "ImageData" and (ip.new_height, ip.new_width, ip.shuffle) == (8, 9, True)
    assert c.type == "Concat" and c.concat_param.concat_dim == 2


def test_v0_field_of_another_layer_type_is_dropped_with_a_problem():
    problems: list[str] = []
    param = upgraded("""
        layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "x" }
        input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1
    """, problems)
    assert param.layer[1].type == "ReLU"
    assert len(problems) == 1 and "num_output" in problems[0] and "'r'" in problems[0]


@pytest.mark.parametrize("body, match", [
    ('layers { layer { name: "m" type: "mystery" } }', r"'m' has unknown type 'mystery'"),
    ('layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" } '
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }',
     r"padding layer 'p' feeds layer 'r' of type 'relu'"),
    ('layers { layer { name: "c" type: "conv" } bottom: "nowhere" top: "c" }',
     r"'c' bottom 0 is the unknown blob 'nowhere'"),
])
def test_v0_errors_name_the_layer(body, match):
    param = net_from('input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 ' + body)
    with pytest.raises(ProtoError, match=match) as e:
        upgrade.upgrade_net_as_needed(param, "old.prototxt")
    assert "old.prototxt" in str(e.value)


# ---------------------------------------------------------------------------- data, input, BN
def test_v1_data_transformation_fields_move_to_transform_param():
    param = upgraded("""
        layers { name: "d" type: DATA top: "d" top: "l"
                 data_param { source: "db" batch_size: 4 scale: 0.25 mean_file: "m"
                              crop_size: 5 mirror: true } }
        layers { name: "i" type: IMAGE_DATA top: "i" top: "il"
                 image_data_param { source: "s" scale: 2 } }
        layers { name: "w" type: WINDOW_DATA top: "w" top: "wl"
                 window_data_param { source: "s" crop_size: 3 } }
    """)
    d, i, w = param.layer
    assert (d.transform_param.scale, d.transform_param.mean_file, d.transform_param.crop_size,
            d.transform_param.mirror) == (0.25, "m", 5, True)
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        assert not d.data_param.HasField(f)
    assert d.data_param.batch_size == 4
    assert i.transform_param.scale == 2 and not i.image_data_param.HasField("scale")
    assert w.transform_param.crop_size == 3


def test_input_dim_and_input_shape_become_an_input_layer():
    param = upgraded("""
        input: "a" input: "b"
        input_shape { dim: 1 dim: 2 } input_shape { dim: 3 }
        layer { name: "e" type: "Eltwise" bottom: "a" bottom: "a" top: "e" }
    """)
    first = param.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 2], [3]]
    assert param.layer[1].name == "e"
    assert not param.input and not param.input_shape and not param.input_dim


def test_inputs_without_shapes_are_dropped():
    param = net_from('input: "data" layer { name: "a" type: "ReLU" }')
    assert upgrade.upgrade_net_as_needed(param)
    assert [lp.name for lp in param.layer] == ["a"] and not param.input


def test_extra_input_dims_and_shapes_are_ignored_as_caffe_does():
    # Caffe's UpgradeNetInput reads 4 dims (or one shape) per input and nothing more
    param = net_from('input: "a" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4 '
                     'input_dim: 5 input_dim: 6 input_dim: 7 input_dim: 8')
    assert upgrade.upgrade_net_as_needed(param, "x.prototxt")
    assert [list(s.dim) for s in param.layer[0].input_param.shape] == [[1, 2, 3, 4]]
    param = net_from('input: "a" input_shape { dim: 5 } input_shape { dim: 6 }')
    assert upgrade.upgrade_net_as_needed(param, "x.prototxt")
    assert [list(s.dim) for s in param.layer[0].input_param.shape] == [[5]]


def test_too_few_input_dims_is_an_error():
    param = net_from('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 '
                     'input_dim: 4')
    with pytest.raises(ProtoError, match="2 legacy inputs need 4 input_dim values each"):
        upgrade.upgrade_net_as_needed(param, "x.prototxt")


def test_batchnorm_with_three_params_gets_zero_lr_and_decay():
    param = net_from("""
        layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 }
                param { lr_mult: 1 decay_mult: 5 name: "keep" } }
        layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } }
        layer { name: "s" type: "Scale" param { lr_mult: 1 } param { lr_mult: 1 }
                param { lr_mult: 1 } }
    """)
    assert upgrade.upgrade_net_as_needed(param)
    bn, bn2, s = param.layer
    assert [(p.lr_mult, p.decay_mult) for p in bn.param] == [(0, 0)] * 3
    assert bn.param[2].name == "keep"
    assert bn2.param[0].lr_mult == 1 and s.param[0].lr_mult == 1


def test_current_net_is_left_alone_and_upgrade_is_idempotent():
    current = net_from('layer { name: "a" type: "Input" top: "a" '
                       'input_param { shape { dim: 1 } } }')
    before = current.SerializeToString()
    assert not upgrade.upgrade_net_as_needed(current)
    assert current.SerializeToString() == before
    once = upgraded(V0_NET)
    twice = caffe_pb2.NetParameter()
    twice.CopyFrom(once)
    assert not upgrade.upgrade_net_as_needed(twice)
    assert twice == once


def test_net_needs_upgrade_predicates():
    assert upgrade.net_needs_upgrade(net_from(V0_NET))
    assert upgrade.net_needs_v0_upgrade(net_from(V0_NET))
    v1 = net_from('layers { name: "a" type: RELU }')
    assert upgrade.net_needs_v1_upgrade(v1) and not upgrade.net_needs_v0_upgrade(v1)
    assert not upgrade.net_needs_upgrade(net_from('layer { name: "a" type: "ReLU" }'))


# ---------------------------------------------------------------------------- solver
@pytest.mark.parametrize("enum, name", [
    ("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
    ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_enum_becomes_type_string(enum, name):
    sp = text_format.Parse(f"solver_type: {enum} base_lr: 0.1", caffe_pb2.SolverParameter())
    assert upgrade.upgrade_solver_as_needed(sp, "s.prototxt")
    assert sp.type == name and not sp.HasField("solver_type")


def test_solver_without_solver_type_is_unchanged():
    sp = text_format.Parse('type: "Adam"', caffe_pb2.SolverParameter())
    assert not upgrade.upgrade_solver_as_needed(sp)
    assert sp.type == "Adam"


def test_solver_with_both_fields_is_an_error():
    sp = text_format.Parse('solver_type: NESTEROV type: "Adam"', caffe_pb2.SolverParameter())
    with pytest.raises(SolverError, match=r"s.prototxt: both .*NESTEROV.*'Adam'"):
        upgrade.upgrade_solver_as_needed(sp, "s.prototxt")


# ---------------------------------------------------------------------------- reading files
def test_read_net_param_reads_text_and_binary(tmp_path):
    param = net_from(V0_NET)
    text, binary = tmp_path / "net.prototxt", tmp_path / "net.binaryproto"
    text.write_text(text_format.MessageToString(param))
    binary.write_bytes(param.SerializeToString())
    from_text = upgrade.read_net_param(str(text))
    from_binary = upgrade.read_net_param(str(binary))
    assert from_text == from_binary
    assert from_text.layer[1].type == "Convolution"
    raw = upgrade.read_net_param(str(binary), upgrade=False)
    assert raw == param


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    bytes(np.random.RandomState(3).randint(0, 256, 2000).astype(np.uint8)),
])
def test_file_that_is_neither_text_nor_binary_net(tmp_path, content):
    path = tmp_path / "junk.bin"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=r"junk.bin: neither a text nor a binary "
                                              r"NetParameter"):
        upgrade.read_net_param(str(path))


def test_broken_text_net_reports_the_text_error(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  typo: 3\n}\n')
    with pytest.raises(ProtoError, match=r"broken.prototxt:4:\d+.*typo"):
        upgrade.read_net_param(str(path))


def test_prototxt_given_as_weights_is_named(tmp_path):
    net_path = tmp_path / "net.prototxt"
    net_path.write_text('layer { name: "a" type: "Input" top: "a" '
                        'input_param { shape { dim: 1 } } }')
    with pytest.raises(FileFormatError, match="prototxt rather than a caffemodel"):
        caffe.Net(str(net_path), caffe.TEST, weights=str(net_path))


def test_errors_are_caffe_errors():
    assert issubclass(ProtoError, CaffeError) and issubclass(SolverError, CaffeError)


def test_read_net_file_keys_unknown_fields_by_layer_name(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text('input: "data"\ninput_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3\n'
                    'layer { name: "up" type: "Upsample" bottom: "data" top: "up"\n'
                    '        upsample_param { scale: 3 } }\n')
    param, extras = upgrade.read_net_file(str(path), strict=False)
    assert extras == {"up": {"upsample_param": {"scale": 3}}}
    assert param.input and upgrade.upgrade_net_as_needed(param)
    assert [lp.name for lp in param.layer] == ["input", "up"]  # names, not indices, survive
    with pytest.raises(ProtoError, match="upsample_param"):
        upgrade.read_net_file(str(path))


def test_v0_binary_weights_load_by_name(tmp_path):
    net_param = net_from(V0_NET)
    reference = caffe.Net(net_from(V0_NET), caffe.TEST)
    rng = np.random.RandomState(5)
    for name, blobs in reference.params.items():
        conn = next(c for c in net_param.layers if c.layer.name == name)
        for blob in blobs:
            blob.data[...] = rng.randn(*blob.shape)
            bp = conn.layer.blobs.add()
            bp.num, bp.channels, bp.height, bp.width = (1,) * (4 - len(blob.shape)) + blob.shape
            bp.data.extend(blob.data.ravel().tolist())
    weights = tmp_path / "v0.caffemodel"
    weights.write_bytes(net_param.SerializeToString())
    text = tmp_path / "v0.prototxt"
    text.write_text(textwrap.dedent(V0_NET))
    net = caffe.Net(str(text), caffe.TEST, weights=str(weights))
    for name, blobs in reference.params.items():
        for mine, ref in zip(net.params[name], blobs):
            np.testing.assert_array_equal(mine.data, ref.data)


def test_every_v0_field_has_a_v1_target():
    v0_fields = caffe_pb2.V0LayerParameter.DESCRIPTOR.fields_by_name
    for field, targets in upgrade._V0_FIELDS.items():
        assert field in v0_fields
        for v0_type, path in targets.items():
            assert v0_type in upgrade.V0_LAYER_TYPES
            msg = V1()
            *parents, leaf = path.split(".")
            for p in parents:
                msg = getattr(msg, p)
            assert leaf in msg.DESCRIPTOR.fields_by_name, path
