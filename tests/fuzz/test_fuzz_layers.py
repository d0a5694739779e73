"""Fuzzing layer construction: random NetParameters over every registered layer type (Python
layers aside), with random values in the layer's own ``*_param`` message (and now and then in
another one), random bottoms from an Input layer and a second random layer on top. Each net
must build, run forward and backward, or raise a CaffeError that the layer raised on purpose:
a CaffeError that merely wraps an IndexError or a torch RuntimeError from setup is a finding.
Values stay small, so every net is small."""

from __future__ import annotations

import math

import numpy as np
from fuzzkit import check_outcome, fuzz_settings, scratch
from google.protobuf.descriptor import FieldDescriptor as FD
from hypothesis import given
from hypothesis import strategies as st

import caffe
from caffe.errors import CaffeError
from caffe.proto import caffe_pb2
from caffe.registry import layer_type_list

from layer_db import all_rows

TYPES = [t for t in layer_type_list() if t != "Python"]
_PARAMS = [f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields
           if f.name.endswith("_param") and f.message_type is not None]
_OWN = {"Deconvolution": ["convolution_param"], "Im2col": ["convolution_param"],
        "LSTM": ["recurrent_param"], "RNN": ["recurrent_param"],
        "SoftmaxWithLoss": ["softmax_param", "loss_param"], "EuclideanLoss": ["loss_param"],
        "MultinomialLogisticLoss": ["loss_param"], "SigmoidCrossEntropyLoss": ["loss_param"],
        "InfogainLoss": ["infogain_loss_param", "loss_param"]}


def _own_params(type_name: str) -> list[str]:
    if type_name in _OWN:
        return _OWN[type_name]
    norm = type_name.lower()
    return [p for p in _PARAMS if p[:-6].replace("_", "") == norm]


INTS = st.one_of(st.integers(1, 4), st.integers(-2, 6))
FLOATS = st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, 1e-8, -0.25, 3.0, math.nan, math.inf])
STRINGS = st.sampled_from(["", "gaussian", "xavier", "constant", "bogus", "SUM",
                           scratch("missing.txt"), scratch("out.h5")])


def _scalar(draw, field):
    t = field.type
    if t == FD.TYPE_BOOL:
        return draw(st.booleans())
    if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return draw(FLOATS)
    if t == FD.TYPE_STRING:
        return draw(STRINGS)
    if t == FD.TYPE_BYTES:
        return draw(st.binary(max_size=4))
    if t == FD.TYPE_ENUM:
        return draw(st.sampled_from([v.number for v in field.enum_type.values]))
    if t in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64):
        return draw(st.integers(0, 6))
    return draw(INTS)


def _fill(draw, msg, depth: int = 0, keep: int = 1) -> None:
    """Set a random subset (about ``keep`` in 3) of ``msg``'s fields to small random values."""
    for field in msg.DESCRIPTOR.fields:
        if draw(st.integers(0, 2)) >= keep:
            continue
        repeated = field.is_repeated
        if field.message_type is not None:
            if depth >= 2:
                continue
            count = draw(st.integers(0, 2)) if repeated else 1
            for _ in range(count):
                sub = getattr(msg, field.name).add() if repeated else getattr(msg, field.name)
                _fill(draw, sub, depth + 1, keep)
                if not repeated:
                    sub.SetInParent()
        elif repeated:
            getattr(msg, field.name).extend(
                [_scalar(draw, field) for _ in range(draw(st.integers(0, 3)))])
        else:
            setattr(msg, field.name, _scalar(draw, field))


def _count(draw, exact, lo, hi, default_hi: int = 3) -> int:
    """A blob count the layer accepts (most of the time) or any small count."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.integers(0, 4))
    if exact is not None:
        return exact
    lo = lo or 0
    return draw(st.integers(lo, max(lo, hi if hi is not None else default_hi)))


def _layer(draw, param: caffe_pb2.NetParameter, type_name: str, name: str,
           available: list[str]) -> list[str]:
    lp = param.layer.add(name=name, type=type_name)
    cls = caffe.registry.layer_class(type_name)
    n_bottom = _count(draw, cls.exact_num_bottom_blobs, cls.min_bottom_blobs,
                      cls.max_bottom_blobs)
    lp.bottom.extend(draw(st.permutations(available))[:n_bottom])
    if cls.equal_num_bottom_top_blobs and draw(st.integers(0, 9)):
        n_top = len(lp.bottom)
    else:
        n_top = _count(draw, cls.exact_num_top_blobs, cls.min_top_blobs, cls.max_top_blobs)
    tops = [f"{name}_t{i}" for i in range(n_top)]
    if lp.bottom and n_top and cls.allows_in_place and draw(st.integers(0, 3)) == 0:
        tops[0] = lp.bottom[0]  # in place
    lp.top.extend(tops)
    for p in _own_params(type_name):
        if draw(st.integers(0, 3)):
            _fill(draw, getattr(lp, p), keep=2)
    if draw(st.integers(0, 5)) == 0:
        _fill(draw, getattr(lp, draw(st.sampled_from(_PARAMS))))
    for _ in range(draw(st.integers(0, 1)) if draw(st.integers(0, 4)) == 0 else 0):
        spec = lp.param.add()
        spec.lr_mult = draw(st.sampled_from([0.0, 1.0]))
    if draw(st.integers(0, 4)) == 0:
        lp.loss_weight.extend([draw(FLOATS) for _ in range(draw(st.integers(1, 2)))])
    if draw(st.integers(0, 6)) == 0 and lp.bottom:
        lp.propagate_down.extend([draw(st.booleans()) for _ in lp.bottom])
    return list(lp.top)


@st.composite
def input_shapes(draw, count: int) -> list[list[int]]:
    """Shapes of ``count`` Input tops: the first random, the others mostly related to it (the
    same shape, or labels of its batch size) so that multi-bottom layers get past shape
    checks."""
    base = draw(st.lists(st.integers(1, 4), max_size=4))
    shapes = [base]
    n = base[0] if base else 1
    for _ in range(count - 1):
        shapes.append(draw(st.sampled_from([base, [n], [n, 1, 1, 1], [n, 1]]))
                      if draw(st.integers(0, 3)) else
                      draw(st.lists(st.integers(1, 4), max_size=4)))
    return shapes


@st.composite
def nets(draw) -> tuple[caffe_pb2.NetParameter, int, int]:
    param = caffe_pb2.NetParameter(name="fuzz", force_backward=draw(st.booleans()))
    inp = param.layer.add(name="input", type="Input")
    names = []
    first = draw(st.sampled_from(TYPES))
    cls = caffe.registry.layer_class(first)
    need = cls.exact_num_bottom_blobs or cls.min_bottom_blobs or 1
    for i, dims in enumerate(draw(input_shapes(draw(st.integers(max(1, min(need, 4)), 4))))):
        inp.top.append(f"in{i}")
        inp.input_param.shape.add().dim.extend(dims)
        names.append(f"in{i}")
    tops = _layer(draw, param, first, "fuzzed", names)
    if draw(st.booleans()):
        _layer(draw, param, draw(st.sampled_from(TYPES)), "second", tops or names)
    phase = draw(st.sampled_from([caffe.TRAIN, caffe.TEST]))
    return param, phase, draw(st.integers(0, 2**32 - 1))


def _poke(draw, msg, depth: int = 0) -> None:
    """Set one random field of ``msg`` (or of a message inside it) to a random value, or clear
    it."""
    field = draw(st.sampled_from(list(msg.DESCRIPTOR.fields)))
    if draw(st.integers(0, 4)) == 0:
        msg.ClearField(field.name)
    elif field.message_type is not None:
        value = getattr(msg, field.name)
        sub = (value.add() if not value or draw(st.booleans()) else value[0]) \
            if field.is_repeated else value
        if depth < 2 and sub.DESCRIPTOR.fields:
            _poke(draw, sub, depth + 1)
        sub.SetInParent()
    elif field.is_repeated:
        getattr(msg, field.name).append(_scalar(draw, field))
    else:
        setattr(msg, field.name, _scalar(draw, field))


ROWS = [row for row in all_rows() if row.type in TYPES]


@st.composite
def row_nets(draw) -> tuple[caffe_pb2.NetParameter, int, list[np.ndarray]]:
    """A working configuration from the layer table (tests/layer_rows) with one to three
    fields changed and now and then an input axis resized."""
    row = draw(st.sampled_from(ROWS))
    arrays = [np.asarray(a, np.float32) for a in row.bottoms(np.random.default_rng(0))]
    param = caffe_pb2.NetParameter(name="fuzz", force_backward=True)
    inp = param.layer.add(name="input", type="Input")
    inp.top.extend(f"in{i}" for i in range(len(arrays)))
    for i, a in enumerate(arrays):
        dims = list(a.shape)
        if dims and draw(st.integers(0, 5)) == 0:
            axis = draw(st.integers(0, len(dims) - 1))
            dims[axis] = max(1, dims[axis] + draw(st.sampled_from([-1, 1])))
            arrays[i] = np.resize(a, dims)
        inp.input_param.shape.add().dim.extend(dims)
    lp = param.layer.add()
    lp.CopyFrom(row.layer_param(len(arrays), row.num_tops))
    lp.ClearField("bottom")
    lp.bottom.extend(inp.top)
    own = [getattr(lp, p) for p in _own_params(row.type)] or [lp]
    for _ in range(draw(st.integers(1, 3))):
        _poke(draw, draw(st.sampled_from(own)))
    phase = caffe.TRAIN if row.phase == "TRAIN" else caffe.TEST
    return param, phase, arrays


def _run(param: caffe_pb2.NetParameter, phase: int, feed: int | list[np.ndarray]) -> None:
    """Build the net, fill its inputs (``feed``: arrays, or a seed for random values) and run
    forward and backward."""
    net = caffe.Net(param, phase)
    rng = np.random.default_rng(feed if isinstance(feed, int) else 0)
    for i, name in enumerate(net.inputs):
        blob = net.blobs[name]
        if not isinstance(feed, int):
            blob.data[...] = feed[i]
        elif rng.random() < 0.5:
            blob.data[...] = rng.integers(0, 3, blob.shape)
        else:
            blob.data[...] = rng.standard_normal(blob.shape)
    net.forward()
    net.backward()


def _setup_only_wrapping(err: CaffeError) -> None:
    """Wrapped non-Caffe errors are findings when they come from setup; in forward/backward
    they come from data the net was fed (labels out of range, say) and name the layer."""
    cause = err.__cause__
    if cause is not None and not isinstance(cause, CaffeError) and "in setup" in str(err):
        raise AssertionError(f"setup raised an unchecked {type(cause).__name__}: {err}"
                             ) from cause


@fuzz_settings(400)
@given(st.one_of(nets(), row_nets()))
def test_random_layers(case):
    param, phase, seed = case
    result = check_outcome(lambda: _run(param, phase, seed), wrapped_ok=True)
    if isinstance(result, CaffeError):
        _setup_only_wrapping(result)
