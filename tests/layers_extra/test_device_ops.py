"""The lean device paths of SoftmaxWithLoss, Accuracy, ArgMax, BatchReindex and MemoryData:
the special cases (no ignore_label, out= writes, the reversed-index table of ArgMax) give the
same numbers as independent NumPy references, the label/index range checks still name the
layer on the CPU, and with the GPU's check policy (``labels_checked_on`` false) a forward and
backward run no op that reads a value back from the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from caffe._layers.loss import accuracy, softmax_with_loss
from caffe._layers.loss import labels as label_helpers
from caffe._layers.utility import batch_reindex
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layer import Phase
from caffe.net import create_layer
from caffe.proto import caffe_pb2

FLT_MIN = np.float32(1.17549435e-38)
LP = caffe_pb2.LossParameter


def _layer(type_: str, param: str, bottoms: list[np.ndarray], n_top: int = 1,
           dtype: torch.dtype = torch.float64):
    lp = caffe_pb2.LayerParameter(name="dev", type=type_)
    text_format.Merge(param, lp)
    lp.bottom.extend(f"b{i}" for i in range(len(bottoms)))
    lp.top.extend(f"t{i}" for i in range(n_top))
    layer = create_layer(lp, Phase.TRAIN)
    bottom = []
    for a in bottoms:
        b = Blob(*np.shape(a))
        b.tensor = torch.tensor(np.asarray(a), dtype=dtype)
        bottom.append(b)
    top = [Blob() for _ in range(n_top)]
    layer.SetUp(bottom, top)
    return layer, bottom, top


def _net_step(layer, bottom, top, down: list[bool] | None = None) -> None:
    """What a net runs for the layer: reshape + _forward, then backward (no loss read)."""
    with torch.no_grad():
        layer.reshape(bottom, top)
        layer._forward(bottom, top)
        if type(layer).has_backward and down is not None:
            layer.backward(top, down, bottom)


# ---------------------------------------------------------------------- SoftmaxWithLoss
def _softmax_loss_ref(x, labels, axis, ignore, mode, dy):
    """(loss, prob, dx) from the formulas, in NumPy."""
    e = np.exp(x - x.max(axis, keepdims=True))
    p = e / e.sum(axis, keepdims=True)
    rows = np.moveaxis(p, axis, -1).reshape(-1, x.shape[axis])
    lab = labels.reshape(-1).astype(int)
    valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
    safe = np.where(valid, lab, 0)
    picked = rows[np.arange(len(lab)), safe]
    loss = -np.log(np.maximum(picked, FLT_MIN))[valid].sum()
    outer = int(np.prod(x.shape[:axis]))
    norm = {LP.FULL: lab.size, LP.VALID: valid.sum(), LP.BATCH_SIZE: outer, LP.NONE: 1}[mode]
    norm = max(float(norm), 1.0)
    g = rows.copy()
    g[np.arange(len(lab)), safe] -= 1
    g[~valid] = 0
    g *= dy / norm
    moved = np.moveaxis(p, axis, -1).shape
    dx = np.moveaxis(g.reshape(moved), -1, axis)
    return loss / norm, p, dx


SOFTMAX_CASES = [  # shape, axis, labels, ignore, mode
    ((5, 4), 1, [0, 3, 1, 1, 2], None, LP.VALID),
    ((5, 4), 1, [0, 3, 1, 1, 2], 1, LP.VALID),
    ((5, 4), 1, [0, 3, 1, 1, 2], 7, LP.VALID),  # an ignore label no item carries
    ((5, 4), 1, [0, 3, 1, 1, 2], 3, LP.BATCH_SIZE),
    ((5, 4), 1, [0, 3, 1, 1, 2], -1, LP.NONE),
    ((5, 4), 1, [2, 2, 2, 2, 2], 2, LP.VALID),  # every item ignored: 0
    ((2, 3, 4), 1, np.arange(8) % 3, None, LP.FULL),
    ((2, 3, 4), 1, np.arange(8) % 3, 0, LP.VALID),
    ((2, 3, 4), 2, np.arange(6) % 4, None, LP.VALID),
    ((2, 3, 4), 2, np.arange(6) % 4, 3, LP.FULL),
]


@pytest.mark.parametrize("shape, axis, labels, ignore, mode", SOFTMAX_CASES)
def test_softmax_loss_with_and_without_ignore_label_matches_numpy(shape, axis, labels, ignore,
                                                                   mode):
    x = np.random.default_rng(5).standard_normal(shape) * 3
    labels = np.asarray(labels, float).reshape(
        [d for i, d in enumerate(shape) if i != axis])
    param = f"softmax_param {{ axis: {axis} }} loss_param {{ normalization: {mode}"
    param += "" if ignore is None else f" ignore_label: {ignore}"
    layer, bottom, top = _layer("SoftmaxWithLoss", param + " }", [x, labels], n_top=2)
    top[0].diff_tensor = torch.tensor(0.7, dtype=torch.float64)
    _net_step(layer, bottom, top, [True, False])
    loss, p, dx = _softmax_loss_ref(x, labels, axis, ignore, mode, 0.7)
    np.testing.assert_allclose(float(top[0].data), loss, rtol=1e-6)  # a float32 top
    np.testing.assert_allclose(top[1].data, p, rtol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-12, atol=1e-15)


def test_softmax_loss_clamps_the_probability_at_flt_min():
    x = np.array([[0.0, -200.0], [0.0, 0.0]])  # p(class 1) = e^-200, far below FLT_MIN
    layer, bottom, top = _layer("SoftmaxWithLoss", "", [x, np.array([1.0, 0.0])])
    top[0].diff_tensor = torch.tensor(1.0, dtype=torch.float64)
    _net_step(layer, bottom, top, [True, False])
    loss, _, dx = _softmax_loss_ref(x, np.array([1.0, 0.0]), 1, None, LP.VALID, 1.0)
    assert np.isfinite(loss)
    np.testing.assert_allclose(float(top[0].data), loss, rtol=1e-6)
    np.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-12)


# ---------------------------------------------------------------------- Accuracy
def _accuracy_ref(x, labels, axis, top_k, ignore):
    """(accuracy, per-class accuracy) by Caffe's counting: ties count against the item."""
    rows = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    lab = labels.reshape(-1).astype(int)
    valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
    safe = np.where(valid, lab, 0)
    true = rows[np.arange(len(lab)), safe][:, None]
    correct = ((rows >= true).sum(1) <= top_k) & valid
    acc = correct.sum() / valid.sum() if valid.any() else 0.0
    nums = np.bincount(safe[valid], minlength=x.shape[axis])
    hits = np.bincount(safe[correct], minlength=x.shape[axis])
    return acc, np.where(nums > 0, hits / np.maximum(nums, 1), 0.0)


ACCURACY_CASES = [  # shape, axis, top_k, ignore
    ((12, 5), 1, 1, None),
    ((12, 5), 1, 1, 2),
    ((12, 5), 1, 2, 9),  # an ignore label no item carries
    ((12, 5), 1, 3, 0),
    ((3, 4, 5), 1, 1, None),
    ((3, 4, 5), 1, 2, 1),
    ((3, 4, 5), 2, 2, None),
]


@pytest.mark.parametrize("shape, axis, top_k, ignore", ACCURACY_CASES)
def test_accuracy_with_and_without_ignore_label_matches_numpy(shape, axis, top_k, ignore):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, shape).astype(float)  # many ties
    lab_shape = [d for i, d in enumerate(shape) if i != axis]
    labels = rng.integers(0, shape[axis], lab_shape).astype(float)
    param = f"accuracy_param {{ axis: {axis} top_k: {top_k}"
    param += "" if ignore is None else f" ignore_label: {ignore}"
    layer, bottom, top = _layer("Accuracy", param + " }", [x, labels], n_top=2)
    _net_step(layer, bottom, top)
    acc, per_class = _accuracy_ref(x, labels, axis, top_k, ignore)
    np.testing.assert_allclose(float(top[0].data), acc, rtol=1e-6)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-12)


def test_accuracy_with_every_item_ignored_is_zero():
    layer, bottom, top = _layer("Accuracy", "accuracy_param { ignore_label: 1 }",
                                [np.zeros((3, 2)), np.ones(3)], n_top=2)
    _net_step(layer, bottom, top)
    assert float(top[0].data) == 0.0
    np.testing.assert_array_equal(top[1].data, 0.0)


# ---------------------------------------------------------------------- ArgMax
def test_argmax_index_table_follows_the_shape_and_dtype():
    """The kept table of reversed indices is rebuilt when the entries per item or the dtype
    change; ties still go to the larger index."""
    x = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 0.0, 1.0, 0.0]])
    layer, bottom, top = _layer("ArgMax", "", [x])
    _net_step(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data.reshape(-1), [4, 1])
    bottom[0].reshape(2, 3)
    bottom[0].tensor = torch.tensor([[5.0, 5.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float32)
    _net_step(layer, bottom, top)
    assert top[0].tensor.dtype == torch.float32
    np.testing.assert_array_equal(top[0].data.reshape(-1), [1, 2])


# ---------------------------------------------------------------------- BatchReindex
def test_batch_reindex_out_of_range_index_raises_on_the_cpu_naming_the_layer():
    layer, bottom, top = _layer("BatchReindex", "", [np.zeros((3, 2)), np.array([0.0, 1.0])])
    _net_step(layer, bottom, top)
    bottom[1].tensor = torch.tensor([2.0, 3.0], dtype=torch.float64)
    with pytest.raises(LayerSetupError, match=r"'dev' \(BatchReindex\).*index 3 .*0 to 2"):
        _net_step(layer, bottom, top)
    bottom[1].tensor = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    with pytest.raises(LayerSetupError, match=r"index -1 "):
        _net_step(layer, bottom, top)


def test_batch_reindex_checks_once_per_forward():
    """The backward reuses the forward's checked indices: one zeros and one index_add_."""
    x = np.random.default_rng(2).standard_normal((4, 3))
    layer, bottom, top = _layer("BatchReindex", "", [x, np.array([3.0, 0.0, 3.0])])
    _net_step(layer, bottom, top)
    top[0].diff_tensor = torch.ones(3, 3, dtype=torch.float64)
    with _Recorder() as rec, torch.no_grad():
        layer.backward(top, [True, False], bottom)
    assert [name for name, _ in rec.ops] == ["zeros_like", "index_add_"]
    np.testing.assert_array_equal(bottom[0].diff, [[1] * 3, [0] * 3, [0] * 3, [2] * 3])


# ---------------------------------------------------------------------- no host syncs
class _Recorder(TorchDispatchMode):
    """Records (op name, whether a boolean tensor indexes) of every aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        bool_index = name.startswith("index") and any(
            isinstance(t, torch.Tensor) and t.dtype == torch.bool
            for t in tree_flatten(args[1:])[0])
        self.ops.append((name, bool_index))
        return func(*args, **(kwargs or {}))


#: ops that read a value back to the host (or, with a boolean mask, size their output from
#: the data): each one waits for the device
SYNC_OPS = {"_local_scalar_dense", "item", "nonzero", "is_nonzero", "masked_select", "unique",
            "_unique2", "bincount"}

DEVICE_CASES = [  # type, param, bottoms, tops, propagate_down
    ("SoftmaxWithLoss", "", [(6, 4), [0, 1, 2, 3, 0, 1]], 1, [True, False]),
    ("SoftmaxWithLoss", "loss_param { ignore_label: 1 }", [(2, 4, 3), [[0, 1, 3], [1, 2, 0]]],
     2, [True, False]),
    ("SoftmaxWithLoss", "loss_param { ignore_label: 0 normalization: BATCH_SIZE }",
     [(6, 4), [0, 1, 2, 3, 0, 1]], 1, [True, False]),
    ("Accuracy", "", [(6, 4), [0, 1, 2, 3, 0, 1]], 1, None),
    ("Accuracy", "accuracy_param { top_k: 2 ignore_label: 3 }", [(6, 4), [0, 1, 2, 3, 0, 1]],
     2, None),
    ("Accuracy", "accuracy_param { axis: 2 }", [(2, 3, 4), [[0, 1, 2], [3, 0, 1]]], 2, None),
    ("ArgMax", "", [(3, 2, 4)], 1, None),
    ("ArgMax", "argmax_param { top_k: 3 out_max_val: true }", [(3, 2, 4)], 1, None),
    ("ArgMax", "argmax_param { axis: 1 top_k: 2 }", [(3, 4, 2)], 1, None),
    ("BatchReindex", "", [(4, 3), [3, 0, 3]], 1, [True, False]),
]


def _bottoms(spec):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s) if isinstance(s, tuple) else np.asarray(s, float)
            for s in spec]


@pytest.mark.parametrize("type_, param, bottoms, n_top, down", DEVICE_CASES)
def test_device_path_reads_nothing_back(monkeypatch, type_, param, bottoms, n_top, down):
    layer, bottom, top = _layer(type_, param, _bottoms(bottoms), n_top, torch.float32)
    for t in top:
        t.diff_tensor = torch.ones(t.shape)
    _net_step(layer, bottom, top, down)  # first call: lazily built tables
    with _Recorder() as cpu:
        _net_step(layer, bottom, top, down)
    checked = type_ in ("SoftmaxWithLoss", "Accuracy", "BatchReindex")
    # on the CPU the range check reads its min/max back: the recorder sees reads
    assert any(name in SYNC_OPS for name, _ in cpu.ops) == checked
    for module in (label_helpers, softmax_with_loss, accuracy, batch_reindex):
        monkeypatch.setattr(module, "labels_checked_on", lambda device: False)
    with _Recorder() as gpu_policy:
        _net_step(layer, bottom, top, down)
    reads = [name for name, bool_index in gpu_policy.ops if name in SYNC_OPS or bool_index]
    assert not reads, f"{type_} reads back from the device: {reads}"


# ---------------------------------------------------------------------- MemoryData
def test_memory_data_serves_the_arrays_as_they_are_at_each_forward():
    """The layer keeps the user's arrays (Caffe keeps their pointer): a change between
    forwards is served."""
    data = np.arange(4 * 2, dtype=np.float32).reshape(4, 2, 1, 1)
    labels = np.arange(4, dtype=np.float32)
    layer, _, top = _layer("MemoryData",
                           "memory_data_param { batch_size: 2 channels: 2 height: 1 width: 1 }",
                           [], n_top=2)
    layer.reset(data, labels, 4)
    _net_step(layer, [], top)
    np.testing.assert_array_equal(top[0].data, data[:2])
    data[2:] = -1.0
    labels[2:] = 7.0
    _net_step(layer, [], top)
    np.testing.assert_array_equal(top[0].data, -1.0)
    np.testing.assert_array_equal(top[1].data.reshape(-1), [7.0, 7.0])
