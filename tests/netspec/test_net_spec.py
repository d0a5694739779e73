"""caffe.NetSpec, caffe.layers (L), caffe.params (P) and caffe.to_proto, as pycaffe's
net_spec: naming, automatic names, ntop, in_place, repeated and nested parameters, the
``*_param`` keyword rule, and clear errors for unknown parameters."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.errors import CaffeError, NetDefinitionError
from caffe.proto import caffe_pb2


def lenet(batch_size: int) -> caffe_pb2.NetParameter:
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                         dict(dim=[batch_size, 1, 1, 1])],
                                  transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50,
                            weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def anon_lenet(batch_size: int) -> caffe_pb2.NetParameter:
    data, label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                     dict(dim=[batch_size, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50,
                          weight_filler=dict(type="xavier"))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=dict(type="xavier"))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type="xavier"))
    loss = L.SoftmaxWithLoss(ip2, label)
    return loss.to_proto()


# The prototxt pycaffe prints for lenet(64): fields in schema order, in-place ReLU, layers named
# after their first top.
LENET_TEXT = textwrap.dedent("""\
    layer {
      name: "data"
      type: "DummyData"
      top: "data"
      top: "label"
      transform_param {
        scale: 0.00392156886
      }
      dummy_data_param {
        shape {
          dim: 64
          dim: 1
          dim: 28
          dim: 28
        }
        shape {
          dim: 64
          dim: 1
          dim: 1
          dim: 1
        }
      }
    }
    layer {
      name: "conv1"
      type: "Convolution"
      bottom: "data"
      top: "conv1"
      convolution_param {
        num_output: 20
        kernel_size: 5
        weight_filler {
          type: "xavier"
        }
      }
    }
    layer {
      name: "pool1"
      type: "Pooling"
      bottom: "conv1"
      top: "pool1"
      pooling_param {
        pool: MAX
        kernel_size: 2
        stride: 2
      }
    }
    """)


def test_lenet_prototxt_text():
    text = str(lenet(64))
    assert text.startswith(LENET_TEXT)
    assert text.count("layer {") == 9
    assert text.endswith(textwrap.dedent("""\
        layer {
          name: "relu1"
          type: "ReLU"
          bottom: "ip1"
          top: "ip1"
        }
        layer {
          name: "ip2"
          type: "InnerProduct"
          bottom: "ip1"
          top: "ip2"
          inner_product_param {
            num_output: 10
            weight_filler {
              type: "xavier"
            }
          }
        }
        layer {
          name: "loss"
          type: "SoftmaxWithLoss"
          bottom: "ip2"
          bottom: "label"
          top: "loss"
        }
        """))


def test_lenet_builds(tmp_path):
    proto = lenet(50)
    assert proto.layer[6].bottom == proto.layer[6].top
    path = tmp_path / "lenet.prototxt"
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TEST)
    assert len(net.layers) == 9
    assert net.blobs["ip2"].shape == (50, 10)


def test_anonymous_lenet_names_by_type_and_count():
    proto = anon_lenet(50)
    assert [lp.name for lp in proto.layer] == [
        "DummyData1", "Convolution1", "Pooling1", "Convolution2", "Pooling2", "InnerProduct1",
        "ReLU1", "InnerProduct2", "SoftmaxWithLoss1"]
    assert list(proto.layer[0].top) == ["DummyData1", "DummyData2"]
    assert list(proto.layer[6].bottom) == list(proto.layer[6].top) == ["InnerProduct1"]
    assert list(proto.layer[8].bottom) == ["InnerProduct2", "DummyData2"]
    net = caffe.Net(proto, caffe.TEST)
    assert len(net.layers) == 9


def test_zero_top_layers():
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    proto = n.to_proto()
    assert [lp.name for lp in proto.layer] == ["data", "silence_data", "silence_data2"]
    assert not proto.layer[1].top
    assert len(caffe.Net(proto, caffe.TEST).forward()) == 0
    anonymous = L.Silence(L.DummyData(shape=dict(dim=[2])), ntop=0)
    assert isinstance(anonymous, caffe.net_spec.Function)


def test_input_that_is_not_a_top():
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=re.escape(
            "Silence input 0 is not a Top (type is <class 'tuple'>)")) as e:
        L.Silence(data, ntop=0)
    assert isinstance(e.value, CaffeError)
    assert re.match(r"^Silence input 0 is not a Top \(type is <(type|class) 'tuple'>\)$",
                    str(e.value))
    L.Silence(*data, ntop=0)


def test_repeated_nested_and_generic_params():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3, 5], pad=1,
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           bias_filler=dict(type="constant", value=0.1),
                           include=dict(phase=caffe.TRAIN), loss_weight=0.5,
                           convolution_param=dict(group=1))
    n.py = L.Python(n.conv, module="my_module", layer="MyLayer", param_str="{'k': 1}")
    layer = n.to_proto().layer[1]
    cp = layer.convolution_param
    assert list(cp.kernel_size) == [3, 5] and list(cp.pad) == [1] and cp.group == 1
    assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(1, 1), (2, 0)]
    assert cp.bias_filler.value == pytest.approx(0.1)
    assert layer.include[0].phase == caffe.TRAIN and list(layer.loss_weight) == [0.5]
    py = n.to_proto().layer[2]
    assert (py.python_param.module, py.python_param.layer, py.python_param.param_str) == (
        "my_module", "MyLayer", "{'k': 1}")


def test_types_without_own_message_use_the_shared_one():
    data = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    deconv = L.Deconvolution(data, num_output=2, kernel_size=4, stride=2)
    assert deconv.to_proto().layer[-1].convolution_param.stride[0] == 2
    loss = L.SoftmaxWithLoss(data, data, loss_param=dict(ignore_label=255))
    assert loss.to_proto().layer[-1].loss_param.ignore_label == 255


def test_name_keyword_and_explicit_names():
    n = caffe.NetSpec()
    n["data"] = L.Input(shape=dict(dim=[1, 3]))
    n.fc = L.InnerProduct(n["data"], num_output=2, name="classifier")
    proto = n.to_proto()
    assert proto.layer[1].name == "classifier" and list(proto.layer[1].top) == ["fc"]


def test_to_proto_of_tops_and_shared_autonames():
    a = L.Input(shape=dict(dim=[1, 4]))
    b = L.ReLU(a)
    c = L.TanH(a)
    proto = caffe.to_proto(b, c)
    assert [lp.name for lp in proto.layer] == ["Input1", "ReLU1", "TanH1"]
    assert list(proto.layer[2].bottom) == ["Input1"]
    assert b.to_proto().layer[-1].name == "ReLU1"


def test_netspec_is_a_mapping_of_tops():
    n = caffe.NetSpec()
    n.a = L.Input(shape=dict(dim=[1]))
    n.b = L.ReLU(n.a)
    assert n.keys() == ["a", "b"] and n.vals() == [n.a, n.b] and "a" in n
    assert n["b"] is n.b
    del n["b"]
    assert n.keys() == ["a"]
    with pytest.raises(KeyError, match="no top 'b'"):
        _ = n["b"]
    with pytest.raises(AttributeError):
        _ = n.b
    assert not hasattr(n, "b")


def test_tuple_assigned_to_one_name_is_explained():
    n = caffe.NetSpec()
    n.both = L.DummyData(shape=dict(dim=[1]), ntop=2)
    with pytest.raises(NetDefinitionError, match="'both' is a tuple.*ntop=2"):
        n.to_proto()


def test_params_give_enum_values():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == 1
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    with pytest.raises(AttributeError, match="Pooling has no constant 'MEAN'.*MAX, AVE"):
        _ = P.Pooling.MEAN
    with pytest.raises(AttributeError, match="no 'Nope'"):
        _ = P.Nope


def test_unknown_param_names_layer_and_field():
    data = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    conv = L.Convolution(data, num_output=2, kernal_size=3)
    with pytest.raises(AttributeError) as e:
        conv.to_proto()
    assert isinstance(e.value, NetDefinitionError)
    msg = str(e.value)
    assert "Convolution1" in msg and "kernal_size" in msg and "kernel_size" in msg


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_filler=dict(tyype="xavier")), r"FillerParameter has no field 'tyype'.*type"),
    (dict(pooling_param=dict(kernel_size=[2, 3])), r"kernel_size takes a single value"),
    (dict(num_output="many"), r"num_output takes an integer"),
    (dict(weight_filler="xavier"), r"weight_filler is a FillerParameter message"),
    (dict(upsample_param=dict(scale=2)), r"LayerParameter has no field 'upsample_param'"),
])
def test_bad_params_are_caffe_errors(kwargs, match):
    data = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    with pytest.raises(CaffeError, match=match):
        L.Convolution(data, **kwargs).to_proto()


def test_numpy_values_are_accepted():
    data = L.Input(shape=dict(dim=[np.int64(1), np.int64(3)]))
    proto = L.Crop(data, data, crop_param=dict(axis=np.int64(1),
                                               offset=list(np.array([0, 1])))).to_proto()
    assert list(proto.layer[-1].crop_param.offset) == [0, 1]


def test_numpy_arrays_are_lists():
    data = L.Input(shape=dict(dim=np.array([2, 3])))
    conv = L.Convolution(data, num_output=1, kernel_size=np.array([1, 3]))
    proto = conv.to_proto()
    assert list(proto.layer[0].input_param.shape[0].dim) == [2, 3]
    assert list(proto.layer[1].convolution_param.kernel_size) == [1, 3]
