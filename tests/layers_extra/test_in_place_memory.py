"""In-place layers (ReLU, Dropout, BatchNorm, Scale) stay in place in a net: the forward writes
into the blob's own tensor (same memory before and after), the backward leaves the data there,
and between steps a layer holds no full-size tensor beyond the buffers Caffe itself keeps.

BatchNorm is the one exception to "same memory", by design: it writes its output to a new
tensor and keeps the input's memory for its backward, where Caffe writes in place and keeps a
copy of the output (x_norm_) plus a scratch buffer. Its blob's memory therefore alternates
between two buffers, one fewer than Caffe holds."""

from __future__ import annotations

import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

SHAPE = (2, 4, 5, 6)

NET = """
force_backward: true
layer { name: "input" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 4 dim: 5 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "x"
        convolution_param { num_output: 4 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
layer { name: "scale" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
layer { name: "drop" type: "Dropout" bottom: "x" top: "x" dropout_param { dropout_ratio: 0.3 } }
layer { name: "loss" type: "Reduction" bottom: "x" top: "loss"
        reduction_param { operation: SUMSQ } loss_weight: 1 }
"""

#: full-size buffers BVLC Caffe keeps for an in-place layer: BatchNorm's x_norm_ and temp_,
#: Scale's copy of its input (needed for the scale's gradient), Dropout's mask
CAFFE_BUFFERS = {"bn": 2, "scale": 1, "relu": 0, "drop": 1}


def _held_full_size(value, numel: int, skip: set[int], seen: set[int]) -> int:
    """Distinct storages of at least ``numel`` elements reachable from a layer attribute."""
    if isinstance(value, torch.Tensor):
        ptr = value.untyped_storage().data_ptr()
        if value.numel() < numel or ptr in skip or ptr in seen:
            return 0
        seen.add(ptr)
        return 1
    if isinstance(value, (list, tuple)):
        return sum(_held_full_size(v, numel, skip, seen) for v in value)
    if isinstance(value, dict):
        return sum(_held_full_size(v, numel, skip, seen) for v in value.values())
    return 0


@pytest.fixture
def net() -> caffe.Net:
    param = caffe_pb2.NetParameter()
    text_format.Merge(NET, param)
    net = caffe.Net(param, caffe.TRAIN)
    net.blobs["data"].data[...] = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    net.forward()
    net.backward()
    return net


@pytest.mark.parametrize("name", list(CAFFE_BUFFERS))
def test_in_place_layer_keeps_the_blob_memory(net: caffe.Net, name: str) -> None:
    blob = net.blobs["x"]
    layer = net.layer_dict[name]
    ptr = blob.tensor.data_ptr()
    net.forward(start=name, end=name)
    if name == "bn":  # the input's memory is now what the layer keeps for its backward
        assert layer.x3.data_ptr() == ptr
        ptr = blob.tensor.data_ptr()
    assert blob.tensor.data_ptr() == ptr, f"{name} forward replaced the blob's memory"
    net.backward(start=name, end=name)
    assert blob.tensor.data_ptr() == ptr, f"{name} backward replaced the blob's memory"
    skip = {blob.tensor.untyped_storage().data_ptr(), blob.diff_tensor.untyped_storage().data_ptr()}
    skip |= {p.tensor.untyped_storage().data_ptr() for p in layer.blobs}
    held = _held_full_size(vars(layer), blob.count, skip, set())
    assert held <= CAFFE_BUFFERS[name], (
        f"{name} holds {held} full-size tensors between steps; Caffe keeps "
        f"{CAFFE_BUFFERS[name]}")


def test_in_place_chain_after_batch_norm_keeps_the_blob_memory(net: caffe.Net) -> None:
    blob = net.blobs["x"]
    net.forward(end="bn")
    ptr = blob.tensor.data_ptr()
    net.forward(start="scale")
    assert blob.tensor.data_ptr() == ptr
    net.backward()
    assert blob.tensor.data_ptr() == ptr
