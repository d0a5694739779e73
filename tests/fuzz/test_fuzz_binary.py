"""Fuzzing the binary readers: caffemodels (current, V1 and V0 layouts) loaded into a net,
binaryproto mean files and BlobProtoVectors, solver states restored into a solver, and Datum
records. Inputs are mutations of valid files and structured messages whose declared shapes
disagree with what they carry (up to 10^12 elements); each must load or raise a CaffeError
without allocating what it merely claims."""

from __future__ import annotations

import io

import numpy as np
from fuzzkit import (
    check_outcome,
    fuzz_settings,
    learned_weights,
    mutated,
    the_net,
    the_solver,
    write_bytes,
)
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

import caffe
from caffe import model_io
from caffe.data.datum import datum_to_chw, parse_datum
from caffe.data.transformer import load_mean_file
from caffe.proto import caffe_pb2, upgrade

LAYER_NAMES = ["conv", "ip", "data", "loss", "other", ""]


def _seed_models() -> list[bytes]:
    net = the_net()
    current = model_io.net_to_proto(net).SerializeToString()
    v1 = caffe_pb2.NetParameter(name="v1")
    v0 = caffe_pb2.NetParameter(name="v0")
    for name, layer in zip(net._layer_names, net.layers):
        lv1 = v1.layers.add(name=name, type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
        lv0 = v0.layers.add().layer
        lv0.name, lv0.type = name, "innerproduct"
        for blob in layer.blobs:
            bp = caffe_pb2.BlobProto(num=1, channels=1, height=1, width=blob.count)
            bp.data.extend(blob.data.ravel().tolist())
            lv1.blobs.add().CopyFrom(bp)
            lv0.blobs.add().CopyFrom(bp)
    return [current, v1.SerializeToString(), v0.SerializeToString()]


SEED_MODELS = _seed_models()

# ---------------------------------------------------------------------------- structured blobs
HUGE = st.sampled_from([10**12, 2**31 - 1, 2**32, 2**62, 2**63 - 1, 2**21])
DIM = st.one_of(st.integers(-2, 5), HUGE)
VALUES = st.lists(st.floats(width=32, allow_nan=True), max_size=12)


@st.composite
def blobprotos(draw) -> caffe_pb2.BlobProto:
    bp = caffe_pb2.BlobProto()
    kind = draw(st.integers(0, 2))
    if kind == 0:
        bp.shape.dim.extend(draw(st.lists(DIM, max_size=5)))
    elif kind == 1:
        for field in ("num", "channels", "height", "width"):
            if draw(st.booleans()):
                setattr(bp, field, draw(st.one_of(st.integers(-2, 5),
                                                  st.just(2**31 - 1))))
    values = draw(VALUES)
    if draw(st.booleans()):
        bp.double_data.extend(values)
    else:
        bp.data.extend(values)
    if draw(st.booleans()):
        bp.diff.extend(draw(VALUES))
    return bp


def _fit_shape(bp: caffe_pb2.BlobProto, shape: tuple[int, ...], claim: int) -> None:
    """Make ``bp`` declare the net's shape (or ``claim`` in front of it) so loading gets past
    the shape check and reaches the values."""
    bp.ClearField("shape")
    bp.shape.dim.extend(((claim,) if claim else ()) + tuple(shape))


@st.composite
def models(draw) -> bytes:
    param = caffe_pb2.NetParameter(name="fuzz")
    net = the_net()
    shapes = {name: [b.shape for b in layer.blobs]
              for name, layer in zip(net._layer_names, net.layers)}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(LAYER_NAMES))
        v1 = draw(st.booleans())
        lp = param.layers.add(name=name) if v1 else param.layer.add(name=name, type="Foo")
        for j in range(draw(st.integers(0, 3))):
            bp = draw(blobprotos())
            want = shapes.get(name, [])
            if j < len(want) and draw(st.booleans()):
                _fit_shape(bp, want[j], draw(st.sampled_from([0, 0, 1, 10**12])))
            lp.blobs.add().CopyFrom(bp)
    return param.SerializeToString()


MODEL_BYTES = st.one_of(models(), mutated(SEED_MODELS), st.binary(max_size=64))


def _load_model(path: str) -> None:
    upgrade.read_weights_param(path)
    model_io.copy_trained_layers(the_net(), path)


@fuzz_settings(300)
@given(MODEL_BYTES)
# found by this target: a V0 layer name that is not UTF-8 broke the V0 -> V1 upgrade
@example(b"\x12\x13\n\x11\n\x01\xe4\x12\x0cinnerproduct")
def test_caffemodel(data):
    path = write_bytes("fuzz.caffemodel", data)
    check_outcome(lambda: _load_model(path))


# ---------------------------------------------------------------------------- binaryproto
MEAN_SEED = model_io.array_to_blobproto(np.ones((1, 3, 2, 2), np.float32)).SerializeToString()
VECTOR_SEED = caffe.io.arraylist_to_blobprotovector_str([np.ones((2, 3)), np.zeros(4)])


def _vector(blobs: list[caffe_pb2.BlobProto]) -> bytes:
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(blobs)
    return vec.SerializeToString()


@fuzz_settings(300)
@given(st.one_of(blobprotos().map(lambda b: b.SerializeToString()), mutated([MEAN_SEED]),
                 st.lists(blobprotos(), max_size=3).map(_vector), mutated([VECTOR_SEED]),
                 st.binary(max_size=64)))
# found by this target: a negative dimension next to a zero one reached reshape
@example(b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
def test_binaryproto(data):
    path = write_bytes("fuzz.binaryproto", data)
    check_outcome(lambda: load_mean_file(path))
    check_outcome(lambda: caffe.io.blobprotovector_str_to_arraylist(data))

    def pycaffe_blob():
        bp = caffe_pb2.BlobProto()
        caffe.proto.files.parse_binary(data, bp)
        return caffe.io.blobproto_to_array(bp), caffe.io.blobproto_to_array(bp, True)

    check_outcome(pycaffe_blob)


# ---------------------------------------------------------------------------- solver states
LEARNED = st.sampled_from(["", "learned.caffemodel", "missing.caffemodel", "/", "\x00", "."])


@st.composite
def solver_states(draw) -> bytes:
    state = caffe_pb2.SolverState(iter=draw(st.integers(-2, 2**31 - 1)),
                                  current_step=draw(st.integers(-2, 2**31 - 1)))
    state.learned_net = draw(LEARNED)
    net = the_net()
    shapes = [p.shape for p in net.learnable_params]
    for i in range(draw(st.integers(0, 2 * len(shapes) + 1))):
        bp = draw(blobprotos())
        if i < 2 * len(shapes) and draw(st.booleans()):
            _fit_shape(bp, shapes[i % len(shapes)], draw(st.sampled_from([0, 0, 10**12])))
            if draw(st.booleans()):
                bp.ClearField("data")
                bp.ClearField("double_data")
                bp.data.extend([0.5] * int(np.prod(shapes[i % len(shapes)])))
        state.history.add().CopyFrom(bp)
    return state.SerializeToString()


def _state_seeds() -> list[bytes]:
    state = caffe_pb2.SolverState(iter=3, learned_net="learned.caffemodel")
    for p in the_net().learnable_params:
        state.history.add().CopyFrom(model_io.array_to_blobproto(np.zeros(p.shape)))
    return [state.SerializeToString()]


@st.composite
def poked_states(draw, kind: str) -> bytes:
    """A state that fits a ``kind`` solver on the net, with one thing changed (or none)."""
    sets = 2 if kind == "Adam" else 1
    state = caffe_pb2.SolverState(iter=3, current_step=1, learned_net="learned.caffemodel")
    for _ in range(sets):
        for p in the_net().learnable_params:
            state.history.add().CopyFrom(model_io.array_to_blobproto(np.zeros(p.shape)))
    change = draw(st.sampled_from(["none", "iter", "learned", "drop", "extra", "blob"]))
    if change == "iter":
        state.iter = draw(st.integers(-(2**31), 2**31 - 1))
        state.current_step = draw(st.integers(-(2**31), 2**31 - 1))
    elif change == "learned":
        state.learned_net = draw(LEARNED)
    elif change == "drop":
        del state.history[draw(st.integers(0, len(state.history) - 1))]
    elif change == "extra":
        state.history.add().CopyFrom(draw(blobprotos()))
    elif change == "blob":
        state.history[draw(st.integers(0, len(state.history) - 1))].CopyFrom(draw(blobprotos()))
    return state.SerializeToString()


@fuzz_settings(200)
@given(st.sampled_from(["SGD", "Adam"]).flatmap(
    lambda kind: st.tuples(st.one_of(solver_states(), mutated(_state_seeds()),
                                     poked_states(kind)), st.just(kind))))
# found by this target: a learned_net that is not UTF-8 comes back from protobuf as bytes
@example(case=(b"\x08\x03\x12\x01\xec", "SGD"))
def test_solverstate(case):
    data, kind = case
    learned_weights()
    path = write_bytes("fuzz.solverstate", data)
    check_outcome(lambda: the_solver(kind).restore(path))


# ---------------------------------------------------------------------------- Datum
def _image(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 7).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = [_image("PNG", "RGB", (3, 2)), _image("JPEG", "L", (8, 8)),
          _image("PNG", "RGBA", (2, 2)), _image("BMP", "RGB", (2, 3)),
          _image("PNG", "I;16", (2, 2)), _image("GIF", "P", (4, 4))]


@st.composite
def datums(draw) -> bytes:
    d = caffe_pb2.Datum()
    dims = st.one_of(st.integers(-1, 4), st.just(2**31 - 1))
    d.channels, d.height, d.width = draw(dims), draw(dims), draw(dims)
    kind = draw(st.integers(0, 2))
    if kind == 0:
        d.data = draw(st.binary(max_size=40))
    elif kind == 1:
        d.float_data.extend(draw(VALUES))
    else:
        d.encoded = True
        d.data = draw(st.one_of(st.sampled_from(IMAGES), mutated(IMAGES, 3),
                                st.binary(max_size=40)))
    d.label = draw(st.integers(-(2**31), 2**31 - 1))
    return d.SerializeToString()


def _seed_datums() -> list[bytes]:
    raw = caffe.io.array_to_datum(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 5)
    flt = caffe.io.array_to_datum(np.ones((1, 2, 2)), 1)
    enc = caffe_pb2.Datum(encoded=True, data=IMAGES[0], label=2)
    return [x.SerializeToString() for x in (raw, flt, enc)]


@fuzz_settings(300)
@given(st.one_of(datums(), mutated(_seed_datums()), st.binary(max_size=64)),
       st.sampled_from([None, True, False]))
# found by this target: a 58-byte GIF claiming 516 x 43264 pixels was decoded (200 MB)
@example(b'\x08\x00\x10\x00\x18\x00"6GIF87a\x04\x02\x00\xa9\x00\x00\x04\x00\x80\x00\x00'
         b"\x00\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x04\x00\x04\x00\x00\x08\t\x00\x01\x08\x1cH"
         b"\xb0 \x80\x80\x07.29NQ\xd0\xe0\x00:(\x008\x01", True)
def test_datum(data, color):
    def decode():
        datum = parse_datum(data, "record 0")
        datum_to_chw(datum, "record 0", color)
        caffe.io.datum_to_array(datum)

    check_outcome(decode)


def test_claimed_size_is_checked_before_allocating():
    """A blob declaring 10^12 elements (or a product that wraps around int64) but carrying 10
    values is rejected by every reader, quickly and without allocating."""
    from caffe.errors import FileFormatError

    for dims in ([10**6, 10**6], [2**32, 2**32], [2**62, 4]):
        bp = caffe_pb2.BlobProto()
        bp.shape.dim.extend(dims)
        bp.data.extend([1.0] * 10 if dims[0] == 10**6 else [])
        for read in (model_io.blobproto_to_array, caffe.io.blobproto_to_array):
            err = check_outcome(lambda read=read, bp=bp: read(bp))
            assert isinstance(err, FileFormatError), (read, dims)
