"""The native PyTorch twin of a benchmark net: plain ``torch.nn.functional`` calls, one per
prototxt layer, read from the NetParameter (no neocaffe layer code is involved).

It is written as a PyTorch user would write the net by hand: ReLU runs in place where the
prototxt says so, a BatchNorm followed by an in-place Scale becomes one affine
``F.batch_norm`` (PyTorch's BatchNorm2d), the loss is ``F.cross_entropy``, the backward is
autograd's, and training uses ``torch.optim.SGD``. Only the layer types of the benchmark
nets are known; anything else raises ``NotImplementedError``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe.proto import caffe_pb2

PP = caffe_pb2.PoolingParameter
EP = caffe_pb2.EltwiseParameter


def _pair(repeated, single_h, single_w, has_hw: bool, default: int) -> tuple[int, int]:
    if has_hw:
        return int(single_h), int(single_w)
    if len(repeated) == 0:
        return default, default
    if len(repeated) == 1:
        return int(repeated[0]), int(repeated[0])
    return int(repeated[0]), int(repeated[1])


def _conv_args(p) -> dict:
    kernel = _pair(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 1)
    stride = _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
    pad = _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), 0)
    dilation = _pair(p.dilation, 0, 0, False, 1)
    return {"kernel": kernel, "stride": stride, "padding": pad, "dilation": dilation,
            "groups": int(p.group)}


def _key(name: str) -> str:
    """A module attribute name for a caffe layer or parameter name."""
    return name.replace("/", "_").replace(".", "_").replace("-", "_")


class TwinNet(nn.Module):
    """``TwinNet(param, caffe_net)`` copies the caffe net's weights (by layer name) and runs
    ``forward(data, label=None)``: the classifier output or probabilities without a label,
    the loss with one."""

    def __init__(self, param: caffe_pb2.NetParameter, caffe_net) -> None:
        super().__init__()
        self.layers = [lp for lp in param.layer if lp.type != "Input"]
        self.input_names = [t for lp in param.layer if lp.type == "Input" for t in lp.top]
        self.weights = nn.ParameterDict()
        #: BatchNorm layer name -> names of its (mean, var) buffers
        self.stats: dict[str, tuple[str, str]] = {}
        #: generator of the Dropout masks (None: torch's default for the device)
        self.generator: torch.Generator | None = None
        #: layer name -> names of its parameters in ``self.weights``
        self.param_names: dict[str, list[str]] = {}
        caffe_params = caffe_net.params
        fused_scale = set()
        for i, lp in enumerate(self.layers):
            blobs = caffe_params.get(lp.name, [])
            if lp.type == "BatchNorm":
                mean, var, factor = (b.tensor.detach() for b in blobs)
                inv = 0.0 if float(factor[0]) == 0 else 1.0 / float(factor[0])
                key = _key(lp.name)
                self.register_buffer(f"{key}_mean", mean * inv)
                self.register_buffer(f"{key}_var", var * inv)
                self.stats[lp.name] = (f"{key}_mean", f"{key}_var")
                nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
                if (nxt is not None and nxt.type == "Scale" and len(nxt.bottom) == 1
                        and nxt.bottom[0] == lp.top[0] == nxt.top[0]):
                    fused_scale.add(nxt.name)
                continue
            names = []
            for j, b in enumerate(blobs):
                key = _key(f"{lp.name}.{j}")
                self.weights[key] = nn.Parameter(b.tensor.detach().clone())
                names.append(key)
            self.param_names[lp.name] = names
        self.fused_scale = fused_scale
        self._ops = [self._op(i, lp) for i, lp in enumerate(self.layers)]

    # ------------------------------------------------------------------ per-layer ops
    def _p(self, lp) -> list[nn.Parameter]:
        return [self.weights[k] for k in self.param_names.get(lp.name, [])]

    def _op(self, i: int, lp):
        """The function (list of bottom tensors -> list of tops) of layer ``i``."""
        t = lp.type
        in_place = len(lp.top) == 1 and len(lp.bottom) >= 1 and lp.top[0] == lp.bottom[0]
        if t == "Convolution":
            a = _conv_args(lp.convolution_param)

            def conv(xs):
                w, *b = self._p(lp)
                return [F.conv2d(xs[0], w, b[0] if b else None, a["stride"], a["padding"],
                                 a["dilation"], a["groups"])]
            return conv
        if t == "Pooling":
            p = lp.pooling_param
            if p.pool not in (PP.MAX, PP.AVE):
                raise NotImplementedError(f"twin: pooling method {p.pool}")
            kernel = _pair([p.kernel_size] if p.HasField("kernel_size") else [],
                           p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 0)
            stride = _pair([p.stride], p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
            pad = _pair([p.pad], p.pad_h, p.pad_w, p.HasField("pad_h"), 0)
            ceil = p.round_mode == PP.CEIL
            glob = p.global_pooling

            def pool(xs):
                x = xs[0]
                k = tuple(x.shape[-2:]) if glob else kernel
                if p.pool == PP.MAX:
                    return [F.max_pool2d(x, k, stride, pad, ceil_mode=ceil)]
                return [F.avg_pool2d(x, k, stride, pad, ceil_mode=ceil, count_include_pad=True)]
            return pool
        if t == "ReLU":
            slope = float(lp.relu_param.negative_slope)
            if slope:
                return lambda xs: [F.leaky_relu(xs[0], slope, inplace=in_place)]
            return lambda xs: [F.relu(xs[0], inplace=in_place)]
        if t == "LRN":
            p = lp.lrn_param
            if p.norm_region != caffe_pb2.LRNParameter.ACROSS_CHANNELS:
                raise NotImplementedError("twin: LRN WITHIN_CHANNEL")
            return lambda xs: [F.local_response_norm(xs[0], p.local_size, p.alpha, p.beta,
                                                     p.k)]
        if t == "InnerProduct":
            p = lp.inner_product_param

            def fc(xs):
                w, *b = self._p(lp)
                x = xs[0].flatten(p.axis)
                return [F.linear(x, w.t() if p.transpose else w, b[0] if b else None)]
            return fc
        if t == "Dropout":
            keep = 1.0 - float(lp.dropout_param.dropout_ratio)

            def dropout(xs):
                x = xs[0]
                if not self.training:
                    return [x]
                # drawn in float32 whatever x's dtype, so a float64 twin gets the same mask
                mask = torch.empty(x.shape, dtype=torch.float32, device=x.device)
                mask.bernoulli_(keep, generator=self.generator).mul_(1.0 / keep)
                return [x * mask.to(x.dtype)]
            return dropout
        if t == "Softmax":
            axis = lp.softmax_param.axis
            return lambda xs: [F.softmax(xs[0], dim=axis)]
        if t == "SoftmaxWithLoss":
            return lambda xs: [F.cross_entropy(xs[0], xs[1].long())]
        if t == "Concat":
            axis = lp.concat_param.axis
            return lambda xs: [torch.cat(xs, dim=axis)]
        if t == "Eltwise":
            p = lp.eltwise_param
            coeff = list(p.coeff)

            def eltwise(xs):
                if p.operation == EP.SUM:
                    if not coeff:
                        y = xs[0] + xs[1]
                        for x in xs[2:]:
                            y = y + x
                        return [y]
                    return [sum(c * x for c, x in zip(coeff, xs))]
                y = xs[0]
                for x in xs[1:]:
                    y = y * x if p.operation == EP.PROD else torch.maximum(y, x)
                return [y]
            return eltwise
        if t == "BatchNorm":
            p = lp.batch_norm_param
            if p.HasField("use_global_stats") and not p.use_global_stats:
                raise NotImplementedError("twin: BatchNorm with batch statistics")
            eps = float(p.eps)
            scale_lp = self.layers[i + 1] if i + 1 < len(self.layers) else None

            def batch_norm(xs):
                mean, var = (getattr(self, k) for k in self.stats[lp.name])
                w = b = None
                if scale_lp is not None and scale_lp.name in self.fused_scale:
                    w, *bias = self._p(scale_lp)
                    b = bias[0] if bias else None
                return [F.batch_norm(xs[0], mean, var, w, b, False, 0.0, eps)]
            return batch_norm
        if t == "Scale":
            p = lp.scale_param

            def scale(xs):
                if lp.name in self.fused_scale:
                    return [xs[0]]
                s, *b = self._p(lp)
                shape = (1,) * p.axis + tuple(s.shape) + (1,) * (xs[0].dim() - p.axis - s.dim())
                y = xs[0] * s.view(shape)
                return [y + b[0].view(shape) if b else y]
            return scale
        raise NotImplementedError(f"twin: layer type {t} ({lp.name})")

    # ------------------------------------------------------------------ running
    def blobs(self, data: torch.Tensor, label: torch.Tensor | None = None
              ) -> dict[str, torch.Tensor]:
        """Every named blob after a forward pass (in-place tops hold their final values)."""
        env = {self.input_names[0]: data}
        if label is not None:
            env["label"] = label
        for lp, op in zip(self.layers, self._ops):
            outs = op([env[b] for b in lp.bottom])
            for name, y in zip(lp.top, outs):
                env[name] = y
        return env

    def forward(self, data: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        env = self.blobs(data, label)
        return env[self.layers[-1].top[0]]

    def sgd(self, caffe_net, base_lr: float, momentum: float, weight_decay: float
            ) -> torch.optim.SGD:
        """torch.optim.SGD with one group per distinct (lr_mult, decay_mult) of the caffe
        net's learnable parameters, so both sides apply the same local rates."""
        by_blob = {id(b): (lr, d) for b, lr, d in zip(
            caffe_net.learnable_params, caffe_net.params_lr, caffe_net.params_weight_decay)}
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for lname, blobs in caffe_net.params.items():
            for b, key in zip(blobs, self.param_names.get(lname, [])):
                groups.setdefault(by_blob[id(b)], []).append(self.weights[key])
        return torch.optim.SGD(
            [{"params": ps, "lr": base_lr * lr, "weight_decay": weight_decay * d}
             for (lr, d), ps in groups.items()], lr=base_lr, momentum=momentum)
