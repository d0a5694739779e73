"""Fuzzing the HDF5 readers: weights (``/data/<layer>/<i>``), solver states
(``.solverstate.h5``) and HDF5Data sources. Files are built from random layouts: groups where
datasets belong and the reverse, strings, compound and empty types, scalar and zero-row
datasets, dangling soft and external links, and chunked datasets that declare up to 10^12
elements while the file holds a few bytes (a fill value). Each must load or raise a CaffeError
without allocating what it merely claims."""

from __future__ import annotations

import h5py
import numpy as np
from fuzzkit import (
    check_outcome,
    fuzz_settings,
    learned_weights,
    scratch,
    the_net,
    the_solver,
)
from hypothesis import given
from hypothesis import strategies as st

import caffe
from caffe import model_io
from caffe.data.hdf5 import load_datasets

SHAPES = {"conv": [(2, 3, 3, 3), (2,)], "ip": [(3, 8), (3,)]}


def _small_shape(draw) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(0, 4), max_size=3)))


@st.composite
def dataset_specs(draw, fitting: tuple[int, ...] | None = None):
    """(kind, shape, dtype) of one dataset-like object."""
    kind = draw(st.sampled_from(["plain", "plain", "huge", "scalar", "group", "soft",
                                 "external", "string", "compound", "empty"]))
    shape = fitting if fitting is not None and draw(st.booleans()) else _small_shape(draw)
    dtype = draw(st.sampled_from(["f4", "f8", "i4", "u1", "?", "f2", "c8", "i8"]))
    return kind, shape, dtype


def _make(group: h5py.Group, name: str, spec) -> None:
    kind, shape, dtype = spec
    if kind == "plain":
        group.create_dataset(name, data=np.ones(shape, dtype=dtype))
    elif kind == "huge":  # declared 10^12 elements (or the fitting shape times 10^6)
        big = (10**6,) + tuple(max(d, 1) for d in shape) if shape else (10**6, 10**6)
        fill = 1 if np.dtype(dtype).kind in "fiu" else None
        group.create_dataset(name, shape=big, dtype=dtype, chunks=(1,) * len(big),
                             fillvalue=fill)
    elif kind == "scalar":
        group.create_dataset(name, data=np.float32(2.5))
    elif kind == "group":
        group.create_group(name)
    elif kind == "soft":
        group[name] = h5py.SoftLink("/nowhere/at/all")
    elif kind == "external":
        group[name] = h5py.ExternalLink(scratch("absent.h5"), "/x")
    elif kind == "string":
        group.create_dataset(name, data=np.array([b"ab", b"cd"]))
    elif kind == "compound":
        group.create_dataset(name, data=np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]))
    else:
        group.create_dataset(name, shape=None, dtype="f4")


@st.composite
def weights_files(draw) -> str:
    path = scratch("fuzz_weights.h5")
    with h5py.File(path, "w") as f:
        if draw(st.integers(0, 5)) == 0:
            _make(f, "data", draw(dataset_specs()))
            return path
        data = f.create_group("data")
        for name in draw(st.lists(st.sampled_from(["conv", "ip", "loss", "x"]), max_size=3,
                                  unique=True)):
            if draw(st.integers(0, 6)) == 0:
                _make(data, name, draw(dataset_specs()))
                continue
            layer = data.create_group(name)
            want = SHAPES.get(name, [])
            for j in range(draw(st.integers(0, 3))):
                fit = want[j] if j < len(want) else None
                key = draw(st.sampled_from([str(j), str(j), "x", "-1", str(j + 7)]))
                if key not in layer:
                    _make(layer, key, draw(dataset_specs(fit)))
    return path


@fuzz_settings(150)
@given(weights_files())
def test_hdf5_weights(path):
    check_outcome(lambda: model_io.copy_trained_layers(the_net(), path))


@st.composite
def state_files(draw, kind: str) -> str:
    """A random layout, or (half of the time) a state that fits a ``kind`` solver with one
    entry replaced by a random object."""
    path = scratch("fuzz.solverstate.h5")
    shapes = [p.shape for p in the_net().learnable_params]
    shapes *= 2 if kind == "Adam" else 1
    with h5py.File(path, "w") as f:
        if draw(st.booleans()):
            f["iter"], f["current_step"] = np.int32(3), np.int32(1)
            f["learned_net"] = np.bytes_(b"learned.caffemodel")
            group = f.create_group("history")
            for i, shape in enumerate(shapes):
                group[str(i)] = np.zeros(shape, np.float32)
            victim = draw(st.sampled_from(["", "iter", "current_step", "learned_net",
                                           "history", "history/0", f"history/{len(shapes)}"]))
            if victim in f:
                del f[victim]
            if victim and draw(st.booleans()):
                fit = shapes[0] if victim == "history/0" else None
                _make(f, victim, draw(dataset_specs(fit)))
            return path
        for key in draw(st.lists(st.sampled_from(["iter", "learned_net", "current_step",
                                                   "history"]), unique=True)):
            choice = draw(st.integers(0, 3))
            if key == "history" and choice:
                group = f.create_group("history")
                for i in range(draw(st.integers(0, len(shapes) + 1))):
                    fit = shapes[i] if i < len(shapes) else None
                    key = draw(st.sampled_from([str(i), str(i), "z"]))
                    if key not in group:
                        _make(group, key, draw(dataset_specs(fit)))
            elif key == "learned_net" and choice:
                f.create_dataset(key, data=np.bytes_(draw(st.sampled_from(
                    [b"", b"missing.caffemodel", b"\xff\xfe", b"/"]))))
            elif choice:
                f.create_dataset(key, data=np.int32(draw(st.integers(-5, 5))))
            else:
                _make(f, key, draw(dataset_specs()))
    return path


@fuzz_settings(100)
@given(st.sampled_from(["SGD", "Adam"]).flatmap(
    lambda kind: st.tuples(state_files(kind), st.just(kind))))
def test_hdf5_solverstate(case):
    path, kind = case
    learned_weights()
    check_outcome(lambda: the_solver(kind).restore(path))


@st.composite
def source_files(draw) -> str:
    """A random layout, or (half of the time) a good source with one dataset replaced."""
    path = scratch("fuzz_source.h5")
    with h5py.File(path, "w") as f:
        if draw(st.booleans()):
            rows = draw(st.integers(1, 5))
            f["data"] = np.ones((rows, 2, 3), np.float32)
            f["label"] = np.zeros(rows, np.float32)
            victim = draw(st.sampled_from(["", "data", "label"]))
            if victim:
                del f[victim]
                shape = draw(st.sampled_from([(rows, 2, 3), (rows,), (rows + 1,), (0, 2)]))
                _make(f, victim, draw(dataset_specs(shape)))
            return path
        for name in draw(st.lists(st.sampled_from(["data", "label", "other"]), max_size=3,
                                  unique=True)):
            spec = draw(dataset_specs(draw(st.sampled_from([(2, 3), (3,), (0, 2)]))))
            _make(f, name, spec)
    return path


def _hdf5_data_net(source_list: str) -> None:
    net = caffe.NetSpec()
    net.data, net.label = caffe.layers.HDF5Data(source=source_list, batch_size=3, ntop=2)
    proto = net.to_proto()
    n = caffe.Net(proto, caffe.TRAIN)
    n.forward()
    n.forward()


@fuzz_settings(150)
@given(source_files())
def test_hdf5_data_source(path):
    listing = scratch("fuzz_list.txt")
    with open(listing, "w") as f:
        f.write(f"{path}\n{path}\n")
    check_outcome(lambda: load_datasets(path, ["data", "label"], "fuzz"))
    check_outcome(lambda: _hdf5_data_net(listing))
