"""caffe.set_precision: float32 by default (TF32 off), "tf32" flips PyTorch's TF32 switches,
"bf16" computes Convolution/Deconvolution/InnerProduct in bfloat16 and keeps blobs float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe.errors import CaffeError
from caffe.proto import caffe_pb2

NET = """
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 2 dim: 9 dim: 9 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "deconv" type: "Deconvolution" bottom: "conv" top: "deconv"
  convolution_param { num_output: 2 kernel_size: 2 stride: 2
                      weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "deconv" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture(autouse=True)
def _restore_precision():
    yield
    caffe.set_precision("float32")


def _run(precision: str) -> tuple[float, dict[str, np.ndarray], caffe.Net]:
    caffe.set_precision(precision)
    caffe.set_random_seed(3)
    param = text_format.Parse(NET, caffe_pb2.NetParameter())
    net = caffe.Net(param, caffe.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.standard_normal((4, 2, 9, 9))
    net.blobs["label"].data[...] = [0, 1, 2, 3]
    loss = net.forward_backward()
    grads = {f"{k}/{i}": p.diff.copy() for k, ps in net.params.items() for i, p in enumerate(ps)}
    grads["data"] = net.blobs["data"].diff.copy()
    return loss, grads, net


def test_default_is_ieee_float32():
    assert caffe.get_precision() == "float32"
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32


def test_tf32_switches_pytorch_flags_and_back():
    caffe.set_precision("tf32")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    caffe.set_precision("float32")
    assert not torch.backends.cudnn.allow_tf32


def test_unknown_precision_is_refused():
    with pytest.raises(CaffeError, match="unknown precision 'fp8'.*float32, tf32, bf16"):
        caffe.set_precision("fp8")


def test_bf16_is_close_to_float32_and_blobs_stay_float32():
    loss32, grads32, _ = _run("float32")
    loss16, grads16, net = _run("bf16")
    assert loss16 != loss32  # the products really ran in bfloat16
    assert abs(loss16 - loss32) <= 2e-2 * abs(loss32)
    for name, g in grads32.items():
        err = np.linalg.norm(grads16[name] - g) / max(np.linalg.norm(g), 1e-12)
        assert err < 3e-2, (name, err)
    for name, blob in net.blobs.items():
        assert blob.tensor.dtype == torch.float32, name
        assert blob.diff_tensor.dtype == torch.float32, name
    for ps in net.params.values():
        for p in ps:
            assert p.tensor.dtype == p.diff_tensor.dtype == torch.float32
