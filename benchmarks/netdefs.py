"""The benchmark nets: their deploy prototxts under ``benchmarks/nets/``, the train variant
derived from each, and the random weights both sides share.

The train variant of a deploy net drops its final Softmax, adds a ``label`` Input of shape
(batch,) and appends a SoftmaxWithLoss on the classifier output: the layout of Caffe's own
train_val nets. Deploy nets carry no weight fillers (and BatchNorm statistics are zeros), so
:func:`init_weights` draws every parameter from a seeded generator instead: 1/fan_in-scaled
Gaussians for weights, small biases, positive variances with a factor of 1 for BatchNorm.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from caffe.proto import caffe_pb2, files, upgrade

NET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nets")


@dataclass(frozen=True)
class NetDef:
    """A benchmark net: its name, its deploy prototxt and the size of one input item."""

    name: str
    prototxt: str

    @property
    def path(self) -> str:
        return os.path.join(NET_DIR, self.prototxt)


NETS: dict[str, NetDef] = {n.name: n for n in (
    NetDef("lenet", "lenet.prototxt"),
    NetDef("cifar10_quick", "cifar10_quick.prototxt"),
    NetDef("caffenet", "caffenet.prototxt"),
    NetDef("googlenet", "googlenet.prototxt"),
    NetDef("resnet50", "resnet50.prototxt"),
)}


def _input_layer(param: caffe_pb2.NetParameter) -> caffe_pb2.LayerParameter:
    for lp in param.layer:
        if lp.type == "Input":
            return lp
    raise ValueError(f"net '{param.name}' has no Input layer")


def deploy_param(name: str, batch: int) -> caffe_pb2.NetParameter:
    """The deploy net ``name`` (current format) with its input batch set to ``batch``."""
    param = files.read_text(NETS[name].path, caffe_pb2.NetParameter())
    upgrade.upgrade_net_as_needed(param, NETS[name].path)
    shape = _input_layer(param).input_param.shape[0]
    shape.dim[0] = batch
    return param


def train_param(name: str, batch: int) -> caffe_pb2.NetParameter:
    """The train variant of ``name``: deploy minus the final Softmax, plus a label input and a
    SoftmaxWithLoss."""
    param = deploy_param(name, batch)
    last = param.layer[-1]
    if last.type != "Softmax":
        raise ValueError(f"net '{name}' does not end in a Softmax layer")
    scores = last.bottom[0]
    del param.layer[-1]
    label = caffe_pb2.LayerParameter(name="label_input", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(batch)
    param.layer.insert(1, label)
    loss = param.layer.add(name="loss", type="SoftmaxWithLoss", top=["loss"])
    loss.bottom.extend([scores, "label"])
    param.name = f"{param.name}_train"
    return param


def input_shape(param: caffe_pb2.NetParameter) -> tuple[int, ...]:
    return tuple(_input_layer(param).input_param.shape[0].dim)


def num_classes(param: caffe_pb2.NetParameter) -> int:
    """The classifier width (num_output of the last InnerProduct)."""
    ips = [lp for lp in param.layer if lp.type == "InnerProduct"]
    return int(ips[-1].inner_product_param.num_output)


def init_weights(net, seed: int = 0) -> None:
    """Overwrite every parameter of the caffe ``net`` with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    for layer in net.layers:
        for j, blob in enumerate(layer.blobs):
            shape = blob.shape
            if layer.type == "BatchNorm":
                values = (torch.randn(shape, generator=gen) * 0.1 if j == 0 else
                          torch.rand(shape, generator=gen) + 0.5 if j == 1 else
                          torch.ones(shape))
            elif layer.type == "Scale":
                values = (torch.rand(shape, generator=gen) * 0.4 + 0.8 if j == 0 else
                          torch.randn(shape, generator=gen) * 0.05)
            elif len(shape) >= 2:
                fan_in = math.prod(shape[1:])
                values = torch.randn(shape, generator=gen) * math.sqrt(1.0 / fan_in)
            else:
                values = torch.randn(shape, generator=gen) * 0.01
            blob.tensor.copy_(values.to(blob.tensor.device))


def random_inputs(param: caffe_pb2.NetParameter, seed: int = 1,
                  with_label: bool = False) -> dict[str, torch.Tensor]:
    """Seeded CPU inputs for ``param``: ``data`` (standard normal) and, for train nets,
    ``label`` (integers in [0, classes) stored as float, as Caffe's labels are)."""
    gen = torch.Generator().manual_seed(seed)
    shape = input_shape(param)
    out = {"data": torch.randn(shape, generator=gen)}
    if with_label:
        out["label"] = torch.randint(0, num_classes(param), (shape[0],),
                                     generator=gen).to(torch.float32)
    return out
