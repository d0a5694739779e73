"""Checks on caffe.proto / caffe_pb2: generated code in sync, upstream field
numbers and defaults, and text / wire round-trips."""
import os
import re
import struct
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2, text_format
from google.protobuf.descriptor import FieldDescriptor

from caffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "caffe", "proto")
PB2_PATH = os.path.join(PROTO_DIR, "caffe_pb2.py")
GEN_SCRIPT = os.path.join(ROOT, "tools", "gen_proto.py")


# ---------------------------------------------------------------------------
# (a) the committed caffe_pb2.py matches caffe.proto
# ---------------------------------------------------------------------------

def _protoc_version():
    out = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "--version"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
    return m.group(1) if m else out.strip()


def _committed_gencode_version():
    with open(PB2_PATH, encoding="utf-8") as fh:
        m = re.search(r"^# Protobuf Python Version: (\S+)$", fh.read(), re.MULTILINE)
    return m.group(1) if m else None


def test_regenerated_pb2_is_byte_identical(tmp_path):
    pytest.importorskip("grpc_tools")
    committed = _committed_gencode_version()
    protoc = _protoc_version()
    # Python gencode version is "<major>.<libprotoc version>", e.g. 7.35.1 / 35.1.
    if committed is None or committed.split(".", 1)[-1] != protoc:
        pytest.skip(f"grpc_tools ships libprotoc {protoc} but caffe_pb2.py "
                    f"was made with {committed}")
    subprocess.run([sys.executable, GEN_SCRIPT, str(tmp_path)], check=True,
                   capture_output=True)
    with open(os.path.join(tmp_path, "caffe_pb2.py"), "rb") as fh:
        fresh = fh.read()
    with open(PB2_PATH, "rb") as fh:
        committed_bytes = fh.read()
    assert fresh == committed_bytes, \
        "caffe_pb2.py is stale: run `python tools/gen_proto.py`"


def _normalize(fdp):
    """Drop json_name and canonicalise float defaults: protoc's python
    generator rewrites e.g. "1e-08" as "9.99999994e-09" in the embedded copy."""
    def walk(msgs):
        for m in msgs:
            for f in m.field:
                f.ClearField("json_name")
                if f.HasField("default_value") and f.type in (
                        f.TYPE_FLOAT, f.TYPE_DOUBLE):
                    value = float(f.default_value)
                    if f.type == f.TYPE_FLOAT:
                        value = struct.unpack("<f", struct.pack("<f", value))[0]
                    f.default_value = repr(value)
            walk(m.nested_type)
    walk(fdp.message_type)
    return fdp


def test_pb2_descriptor_matches_proto_source(tmp_path):
    """Version-independent sync check: compare the schema itself."""
    pytest.importorskip("grpc_tools")
    desc = os.path.join(tmp_path, "caffe.desc")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
                    "--descriptor_set_out=" + desc,
                    os.path.join(PROTO_DIR, "caffe.proto")],
                   check=True, capture_output=True)
    with open(desc, "rb") as fh:
        fds = descriptor_pb2.FileDescriptorSet.FromString(fh.read())
    from_source = _normalize(fds.file[0])
    from_pb2 = _normalize(
        descriptor_pb2.FileDescriptorProto.FromString(caffe_pb2.DESCRIPTOR.serialized_pb))
    assert from_source == from_pb2


# ---------------------------------------------------------------------------
# (b) spot checks against upstream BVLC Caffe facts
# ---------------------------------------------------------------------------

def _message(path):
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name[path.split(".")[0]]
    for part in path.split(".")[1:]:
        desc = desc.nested_types_by_name[part]
    return desc


def _enum(path):
    parts = path.split(".")
    if len(parts) == 1:
        return caffe_pb2.DESCRIPTOR.enum_types_by_name[parts[0]]
    return _message(".".join(parts[:-1])).enum_types_by_name[parts[-1]]


def _label(field):
    if getattr(field, "is_repeated", None) is not None and not callable(field.is_repeated):
        if field.is_repeated:
            return "repeated"
        return "required" if field.is_required else "optional"
    return {1: "optional", 2: "required", 3: "repeated"}[field.label]


_TYPE_NAMES = {
    getattr(FieldDescriptor, name): name[5:].lower()
    for name in dir(FieldDescriptor) if name.startswith("TYPE_")
}


def _attr(field, what):
    if what == "number":
        return field.number
    if what == "label":
        return _label(field)
    if what == "type":
        if field.message_type is not None:
            return field.message_type.name
        if field.enum_type is not None:
            return field.enum_type.name
        return _TYPE_NAMES[field.type]
    if what == "packed":
        return bool(field.is_packed) and field.GetOptions().HasField("packed")
    if what == "default":
        assert field.has_default_value, f"{field.full_name} has no explicit default"
        value = field.default_value
        if field.enum_type is not None:
            return field.enum_type.values_by_number[value].name
        return value
    raise AssertionError(what)


# (message, field, attribute, expected)
FIELD_FACTS = [
    ("BlobShape", "dim", "packed", True),
    ("BlobShape", "dim", "type", "int64"),
    ("BlobProto", "data", "packed", True),
    ("BlobProto", "data", "number", 5),
    ("BlobProto", "diff", "number", 6),
    ("BlobProto", "shape", "number", 7),
    ("BlobProto", "double_data", "number", 8),
    ("BlobProto", "double_diff", "packed", True),
    ("BlobProto", "num", "type", "int32"),
    ("Datum", "float_data", "packed", False),
    ("Datum", "encoded", "number", 7),
    ("FillerParameter", "type", "default", "constant"),
    ("FillerParameter", "std", "default", 1.0),
    ("FillerParameter", "sparse", "default", -1),
    ("FillerParameter", "variance_norm", "default", "FAN_IN"),
    ("NetParameter", "layer", "number", 100),
    ("NetParameter", "layers", "number", 2),
    ("NetParameter", "input_shape", "number", 8),
    ("SolverParameter", "base_lr", "number", 5),
    ("SolverParameter", "type", "number", 40),
    ("SolverParameter", "type", "default", "SGD"),
    ("SolverParameter", "regularization_type", "default", "L2"),
    ("SolverParameter", "regularization_type", "number", 29),
    ("SolverParameter", "clip_gradients", "number", 35),
    ("SolverParameter", "clip_gradients", "default", -1.0),
    ("SolverParameter", "momentum2", "number", 39),
    ("SolverParameter", "momentum2", "default", 0.999),
    ("SolverParameter", "rms_decay", "default", 0.99),
    ("SolverParameter", "delta", "default", 1e-8),
    ("SolverParameter", "snapshot_format", "default", "BINARYPROTO"),
    ("SolverParameter", "solver_mode", "default", "GPU"),
    ("SolverParameter", "solver_type", "number", 30),
    ("SolverParameter", "random_seed", "type", "int64"),
    ("SolverParameter", "layer_wise_reduce", "number", 41),
    ("SolverParameter", "weights", "number", 42),
    ("SolverParameter", "weights", "label", "repeated"),
    ("SolverParameter", "iter_size", "default", 1),
    ("SolverState", "current_step", "number", 4),
    ("NetState", "phase", "default", "TEST"),
    ("ParamSpec", "lr_mult", "default", 1.0),
    ("ParamSpec", "decay_mult", "default", 1.0),
    ("ParamSpec", "share_mode", "number", 2),
    ("LayerParameter", "phase", "number", 10),
    ("LayerParameter", "propagate_down", "number", 11),
    ("LayerParameter", "transform_param", "number", 100),
    ("LayerParameter", "loss_param", "number", 101),
    ("LayerParameter", "accuracy_param", "number", 102),
    ("LayerParameter", "convolution_param", "number", 106),
    ("LayerParameter", "inner_product_param", "number", 117),
    ("LayerParameter", "pooling_param", "number", 121),
    ("LayerParameter", "python_param", "number", 130),
    ("LayerParameter", "prelu_param", "number", 131),
    ("LayerParameter", "batch_norm_param", "number", 139),
    ("LayerParameter", "scale_param", "number", 142),
    ("LayerParameter", "input_param", "number", 143),
    ("LayerParameter", "recurrent_param", "number", 146),
    ("LayerParameter", "swish_param", "number", 147),
    ("LayerParameter", "clip_param", "number", 148),
    ("ClipParameter", "min", "label", "required"),
    ("ClipParameter", "max", "number", 2),
    ("ConvolutionParameter", "bias_term", "default", True),
    ("ConvolutionParameter", "dilation", "number", 18),
    ("ConvolutionParameter", "kernel_size", "label", "repeated"),
    ("ConvolutionParameter", "group", "default", 1),
    ("ConvolutionParameter", "engine", "default", "DEFAULT"),
    ("PoolingParameter", "round_mode", "number", 13),
    ("PoolingParameter", "round_mode", "default", "CEIL"),
    ("PoolingParameter", "stride", "default", 1),
    ("PoolingParameter", "kernel_size", "label", "optional"),
    ("LRNParameter", "k", "default", 1.0),
    ("LRNParameter", "alpha", "default", 1.0),
    ("LRNParameter", "beta", "default", 0.75),
    ("LRNParameter", "local_size", "default", 5),
    ("EltwiseParameter", "stable_prod_grad", "number", 3),
    ("EltwiseParameter", "stable_prod_grad", "default", True),
    ("EltwiseParameter", "operation", "default", "SUM"),
    ("BatchNormParameter", "moving_average_fraction", "default", 0.999),
    ("BatchNormParameter", "eps", "default", 1e-5),
    ("LossParameter", "normalization", "default", "VALID"),
    ("DataParameter", "backend", "default", "LEVELDB"),
    ("DataParameter", "prefetch", "default", 4),
    ("DropoutParameter", "dropout_ratio", "default", 0.5),
    ("CropParameter", "axis", "default", 2),
    ("ReshapeParameter", "num_axes", "default", -1),
    ("FlattenParameter", "end_axis", "default", -1),
    ("ReductionParameter", "operation", "default", "SUM"),
    ("HingeLossParameter", "norm", "default", "L1"),
    ("InfogainLossParameter", "axis", "number", 2),
    ("MVNParameter", "eps", "default", 1e-9),
    ("ExpParameter", "base", "default", -1.0),
    ("SwishParameter", "beta", "default", 1.0),
    ("WindowDataParameter", "crop_mode", "default", "warp"),
    ("SPPParameter", "engine", "number", 6),
    ("V1LayerParameter", "param", "number", 1001),
    ("V1LayerParameter", "blob_share_mode", "number", 1002),
    ("V1LayerParameter", "include", "number", 32),
    ("V1LayerParameter", "loss_param", "number", 42),
    ("V1LayerParameter", "layer", "type", "V0LayerParameter"),
    ("V0LayerParameter", "k", "number", 22),
    ("V0LayerParameter", "hdf5_output_param", "number", 1001),
    ("V0LayerParameter", "det_crop_mode", "default", "warp"),
    ("PReLUParameter", "channel_shared", "default", False),
]


@pytest.mark.parametrize("message,field,what,expected", FIELD_FACTS,
                         ids=[f"{m}.{f}:{w}" for m, f, w, _ in FIELD_FACTS])
def test_field_fact(message, field, what, expected):
    got = _attr(_message(message).fields_by_name[field], what)
    if isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-6)
    else:
        assert got == expected


ENUM_FACTS = [
    ("Phase", "TRAIN", 0),
    ("Phase", "TEST", 1),
    ("V1LayerParameter.LayerType", "NONE", 0),
    ("V1LayerParameter.LayerType", "CONVOLUTION", 4),
    ("V1LayerParameter.LayerType", "INNER_PRODUCT", 14),
    ("V1LayerParameter.LayerType", "ABSVAL", 35),
    ("V1LayerParameter.LayerType", "DECONVOLUTION", 39),
    ("V1LayerParameter.LayerType", "SOFTMAX_LOSS", 21),
    ("V1LayerParameter.DimCheckMode", "PERMISSIVE", 1),
    ("ParamSpec.DimCheckMode", "STRICT", 0),
    ("SolverParameter.SolverType", "ADAM", 5),
    ("SolverParameter.SnapshotFormat", "HDF5", 0),
    ("PoolingParameter.PoolMethod", "STOCHASTIC", 2),
    ("PoolingParameter.RoundMode", "FLOOR", 1),
    ("LossParameter.NormalizationMode", "NONE", 3),
    ("ReductionParameter.ReductionOp", "SUM", 1),
    ("ReductionParameter.ReductionOp", "MEAN", 4),
    ("HingeLossParameter.Norm", "L2", 2),
    ("FillerParameter.VarianceNorm", "AVERAGE", 2),
    ("DataParameter.DB", "LMDB", 1),
    ("ConvolutionParameter.Engine", "CUDNN", 2),
    ("LRNParameter.NormRegion", "WITHIN_CHANNEL", 1),
]


@pytest.mark.parametrize("enum,name,number", ENUM_FACTS,
                         ids=[f"{e}.{n}" for e, n, _ in ENUM_FACTS])
def test_enum_fact(enum, name, number):
    assert _enum(enum).values_by_name[name].number == number


def test_message_inventory():
    expected = {
        "BlobShape", "BlobProto", "BlobProtoVector", "Datum", "FillerParameter",
        "NetParameter", "SolverParameter", "SolverState", "NetState", "NetStateRule",
        "ParamSpec", "LayerParameter", "TransformationParameter", "LossParameter",
        "AccuracyParameter", "ArgMaxParameter", "ClipParameter", "ConcatParameter",
        "BatchNormParameter", "BiasParameter", "ContrastiveLossParameter",
        "ConvolutionParameter", "CropParameter", "DataParameter", "DropoutParameter",
        "DummyDataParameter", "EltwiseParameter", "ELUParameter", "EmbedParameter",
        "ExpParameter", "FlattenParameter", "HDF5DataParameter", "HDF5OutputParameter",
        "HingeLossParameter", "ImageDataParameter", "InfogainLossParameter",
        "InnerProductParameter", "InputParameter", "LogParameter", "LRNParameter",
        "MemoryDataParameter", "MVNParameter", "ParameterParameter", "PoolingParameter",
        "PowerParameter", "PythonParameter", "RecurrentParameter", "ReductionParameter",
        "ReLUParameter", "ReshapeParameter", "ScaleParameter", "SigmoidParameter",
        "SliceParameter", "SoftmaxParameter", "SwishParameter", "TanHParameter",
        "TileParameter", "ThresholdParameter", "WindowDataParameter", "SPPParameter",
        "V1LayerParameter", "V0LayerParameter", "PReLUParameter",
    }
    assert set(caffe_pb2.DESCRIPTOR.message_types_by_name) == expected
    assert set(caffe_pb2.DESCRIPTOR.enum_types_by_name) == {"Phase"}
    assert caffe_pb2.DESCRIPTOR.package == "caffe"
    assert caffe_pb2.DESCRIPTOR.name == "caffe.proto"
    total = sum(len(m.fields) for m in caffe_pb2.DESCRIPTOR.message_types_by_name.values())
    assert total == 423


def test_every_layer_param_field_is_unique_and_in_range():
    layer = _message("LayerParameter")
    specific = [f.number for f in layer.fields if f.number >= 100]
    assert len(specific) == len(set(specific))
    assert sorted(specific) == list(range(100, 149))


# ---------------------------------------------------------------------------
# (c) text and wire round-trips
# ---------------------------------------------------------------------------

NET_PROTOTXT = '''\
name: "RoundTrip"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param {
    shape {
      dim: 1
      dim: 3
      dim: 32
      dim: 32
    }
  }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param {
    lr_mult: 1.0
  }
  param {
    lr_mult: 2.0
    decay_mult: 0.0
  }
  convolution_param {
    num_output: 16
    pad: 1
    kernel_size: 3
    stride: 1
    weight_filler {
      type: "xavier"
    }
    bias_filler {
      type: "constant"
      value: 0.1
    }
  }
}
layer {
  name: "bn1"
  type: "BatchNorm"
  bottom: "conv1"
  top: "conv1"
  batch_norm_param {
    use_global_stats: true
    eps: 1e-05
  }
}
layer {
  name: "relu1"
  type: "ReLU"
  bottom: "conv1"
  top: "conv1"
  relu_param {
    negative_slope: 0.1
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: AVE
    kernel_size: 2
    stride: 2
    round_mode: FLOOR
  }
}
layer {
  name: "norm1"
  type: "LRN"
  bottom: "pool1"
  top: "norm1"
  lrn_param {
    local_size: 5
    alpha: 0.0001
    beta: 0.75
  }
}
layer {
  name: "drop1"
  type: "Dropout"
  bottom: "norm1"
  top: "norm1"
  include {
    phase: TRAIN
  }
  dropout_param {
    dropout_ratio: 0.3
  }
}
layer {
  name: "fc1"
  type: "InnerProduct"
  bottom: "norm1"
  top: "fc1"
  inner_product_param {
    num_output: 10
  }
}
layer {
  name: "clip"
  type: "Clip"
  bottom: "fc1"
  top: "fc1"
  clip_param {
    min: -1.0
    max: 1.0
  }
}
layer {
  name: "swish"
  type: "Swish"
  bottom: "fc1"
  top: "fc1s"
  swish_param {
    beta: 1.5
  }
}
layer {
  name: "sum"
  type: "Eltwise"
  bottom: "fc1"
  bottom: "fc1s"
  top: "sum"
  eltwise_param {
    operation: SUM
    coeff: 1.0
    coeff: -0.5
    stable_prod_grad: false
  }
}
layer {
  name: "py"
  type: "Python"
  bottom: "sum"
  top: "py"
  python_param {
    module: "mymod"
    layer: "MyLayer"
    param_str: "{\\'k\\': 1}"
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "py"
  bottom: "label"
  top: "loss"
  loss_weight: 1.0
  exclude {
    phase: TEST
  }
  loss_param {
    ignore_label: 255
    normalization: BATCH_SIZE
  }
}
'''

LEGACY_PROTOTXT = '''\
name: "Legacy"
layers {
  bottom: "data"
  top: "conv"
  name: "conv"
  type: CONVOLUTION
  blobs_lr: 1.0
  blobs_lr: 2.0
  convolution_param {
    num_output: 4
    kernel_size: 3
  }
}
layers {
  bottom: "conv"
  top: "conv"
  name: "relu"
  type: RELU
}
input: "data"
input_dim: 1
input_dim: 3
input_dim: 8
input_dim: 8
'''

SOLVER_PROTOTXT = '''\
train_net: "train.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.01
display: 100
max_iter: 10000
lr_policy: "multistep"
gamma: 0.1
momentum: 0.9
weight_decay: 0.0005
snapshot: 5000
snapshot_prefix: "snapshots/net"
solver_mode: CPU
stepvalue: 3000
stepvalue: 6000
clip_gradients: 10.0
momentum2: 0.999
type: "Adam"
weights: "init.caffemodel"
'''


@pytest.mark.parametrize("cls,text", [
    (caffe_pb2.NetParameter, NET_PROTOTXT),
    (caffe_pb2.NetParameter, LEGACY_PROTOTXT),
    (caffe_pb2.SolverParameter, SOLVER_PROTOTXT),
], ids=["net", "legacy_v1_net", "solver"])
def test_text_round_trip(cls, text):
    msg = text_format.Parse(text, cls())
    assert text_format.MessageToString(msg) == text
    again = cls.FromString(msg.SerializeToString())
    assert again == msg
    assert text_format.MessageToString(again) == text


def test_round_trip_content():
    net = text_format.Parse(NET_PROTOTXT, caffe_pb2.NetParameter())
    assert [l.type for l in net.layer][:3] == ["Input", "Convolution", "BatchNorm"]
    pool = net.layer[4].pooling_param
    assert pool.pool == caffe_pb2.PoolingParameter.AVE
    assert pool.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert net.layer[1].convolution_param.bias_term  # unset -> default True
    assert net.layer[6].include[0].phase == caffe_pb2.TRAIN
    assert net.layer[8].clip_param.min == -1.0
    assert net.layer[12].loss_param.normalization == caffe_pb2.LossParameter.BATCH_SIZE


def test_wire_encoding_matches_caffe():
    # BlobProto.data is field 5, packed: tag 0x2a, length 4, float32 1.0 LE.
    assert caffe_pb2.BlobProto(data=[1.0]).SerializeToString() == b"\x2a\x04\x00\x00\x80\x3f"
    # LayerParameter.convolution_param is field 106 (tag varint 0xd2 0x06).
    layer = caffe_pb2.LayerParameter(
        convolution_param=caffe_pb2.ConvolutionParameter(num_output=1))
    assert layer.SerializeToString() == b"\xd2\x06\x02\x08\x01"
    # BlobShape.dim is packed int64.
    assert caffe_pb2.BlobShape(dim=[2, 3]).SerializeToString() == b"\x0a\x02\x02\x03"


def test_clip_parameter_requires_min_and_max():
    clip = caffe_pb2.ClipParameter(min=0.0)
    assert not clip.IsInitialized()
    clip.max = 6.0
    assert clip.IsInitialized()
