"""Fuzzing the exact-resume state read back with a solver state (the ``.rng`` sidecar, the
HDF5 state's ``resume_state`` dataset: the same JSON): byte mutations of a valid state and
valid states with one JSON value replaced by a random one, applied to a net with a stateful
HDF5Data layer. Each must restore or raise a CaffeError naming the file."""

from __future__ import annotations

import json

import h5py
import numpy as np
from fuzzkit import check_outcome, fuzz_settings, mutated, scratch
from google.protobuf import text_format
from hypothesis import given
from hypothesis import strategies as st

import caffe
from caffe.proto import caffe_pb2
from caffe.solvers import resume

_NET: list[caffe.Net] = []


def _net() -> caffe.Net:
    if not _NET:
        rng = np.random.default_rng(0)
        names = []
        for i, rows in enumerate((3, 4)):
            path = scratch(f"resume_part{i}.h5")
            with h5py.File(path, "w") as f:
                f["data"] = rng.standard_normal((rows, 2)).astype(np.float32)
                f["label"] = np.arange(rows, dtype=np.float32)
            names.append(path)
        listing = scratch("resume_list.txt")
        with open(listing, "w") as f:
            f.write("\n".join(names) + "\n")
        text = f"""
layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{listing}" batch_size: 2 shuffle: true }} }}
layer {{ name: "drop" type: "Dropout" bottom: "data" top: "data" }}
"""
        net = caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe.TRAIN)
        net.forward()
        _NET.append(net)
    return _NET[0]


_SEED: list[bytes] = []


def _seed() -> bytes:
    """The net's state before any fuzzed input touched it (fixed: strategies must not drift)."""
    if not _SEED:
        _SEED.append(resume.encode(_net(), 7))
    return _SEED[0]


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                    | st.floats(allow_nan=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def poked(draw) -> bytes:
    """The valid state with the value at one path replaced by random JSON."""
    doc = json.loads(_seed())
    paths = [p for p in _paths(doc) if p]
    path = draw(st.sampled_from(paths))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(JSON)
    return json.dumps(doc).encode()


@fuzz_settings(300)
@given(st.one_of(poked(), mutated([_seed()]), st.binary(max_size=64)))
def test_resume_state(data):
    net = _net()
    check_outcome(lambda: resume.apply(net, data, "fuzz.solverstate.rng", 7))
    # whatever was restored, the net still runs (or was left as it was)
    check_outcome(net.forward)
