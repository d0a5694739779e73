"""Rows for the first layers: Input, DummyData, Split, ReLU, Softmax, InnerProduct,
Convolution, Pooling, SoftmaxWithLoss, EuclideanLoss, Accuracy."""

from __future__ import annotations

import numpy as np

from layer_db import LayerCase


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _conv_ref(x, w, b, stride, pad, dilation=1, group=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - (dilation * (kh - 1) + 1)) // stride + 1
    ow = (wd + 2 * pad - (dilation * (kw - 1) + 1)) // stride + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * stride:i * stride + dilation * (kh - 1) + 1:dilation,
                           j * stride:j * stride + dilation * (kw - 1) + 1:dilation]
                out[:, g * og:(g + 1) * og, i, j] = np.einsum(
                    "nckl,ockl->no", patch, w[g * og:(g + 1) * og])
    if b is not None:
        out += b[None, :, None, None]
    return out


def _conv_case(layer, bottoms, group=1, stride=1, pad=0, dilation=1):
    w = layer.blobs[0].data.astype(np.float64)
    b = layer.blobs[1].data.astype(np.float64) if len(layer.blobs) > 1 else None
    return [_conv_ref(bottoms[0].astype(np.float64), w, b, stride, pad, dilation, group)]


def _pool_ref(x, k, s, p, method, ceil=True):
    n, c, h, w = x.shape

    def size(sz):
        out = (int(np.ceil((sz + 2 * p - k) / s)) if ceil else (sz + 2 * p - k) // s) + 1
        if p and (out - 1) * s >= sz + p:
            out -= 1
        return out

    oh, ow = size(h), size(w)
    out = np.zeros((n, c, oh, ow))
    mask = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            if method == "MAX":
                flat = win.reshape(n, c, -1)
                arg = flat.argmax(-1)
                out[:, :, i, j] = flat.max(-1)
                mask[:, :, i, j] = (hs + arg // (we - ws)) * w + ws + arg % (we - ws)
            else:
                out[:, :, i, j] = win.sum((2, 3)) / area
    return out, mask


def _labels(n, c, shape=None):
    def make(rng):
        return rng.integers(0, c, size=shape or (n,)).astype(np.float64)
    return make


def _sm_loss_ref(bottoms, layer):
    x, lab = bottoms
    p = _softmax(x.astype(np.float64), 1)
    lab = lab.astype(int).reshape(x.shape[0], *x.shape[2:])
    picked = np.take_along_axis(p, lab[:, None], 1)
    return [np.array(-np.log(picked).sum() / lab.size)]


def _acc_ref(bottoms, layer):
    x, lab = bottoms
    lab = lab.astype(int)
    true = x[np.arange(len(lab)), lab]
    better = (x >= true[:, None]).sum(1)
    return [np.array((better <= 1).mean())]


ROWS = [
    LayerCase("Input", "two_tops", lambda rng: [], lambda b, layer: [np.zeros((2, 3)),
                                                                     np.zeros((4,))],
              param="input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } }", num_tops=2,
              grad="none", bad_bottom_counts=[1]),
    LayerCase("DummyData", "constant", lambda rng: [], lambda b, layer: [np.full((2, 3), 0.5)],
              param="dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: 'constant'"
                    " value: 0.5 } }", grad="none", bad_bottom_counts=[1]),
    LayerCase("Split", "three", lambda rng: [rng.standard_normal((2, 3, 4))],
              lambda b, layer: [b[0]] * 3, num_tops=3, bad_bottom_counts=[0, 2]),
    LayerCase("ReLU", "plain", lambda rng: [rng.standard_normal((2, 3, 4, 5))],
              lambda b, layer: [np.maximum(b[0], 0)], grad="eltwise", kink=0.0, kink_range=0.01,
              bad_bottom_counts=[2], bad_top_counts=[2]),
    LayerCase("ReLU", "leaky", lambda rng: [rng.standard_normal((2, 3, 4))],
              lambda b, layer: [np.where(b[0] > 0, b[0], 0.1 * b[0])],
              param="relu_param { negative_slope: 0.1 }", grad="eltwise", kink_range=0.01),
    LayerCase("Softmax", "axis1", lambda rng: [rng.standard_normal((2, 5, 3))],
              lambda b, layer: [_softmax(b[0], 1)], bad_bottom_counts=[2]),
    LayerCase("Softmax", "axis_last", lambda rng: [rng.standard_normal((3, 4))],
              lambda b, layer: [_softmax(b[0], -1)], param="softmax_param { axis: -1 }"),
    LayerCase("InnerProduct", "basic", lambda rng: [rng.standard_normal((2, 3, 2, 2))],
              lambda b, layer: [b[0].reshape(2, -1) @ layer.blobs[0].data.T
                                + layer.blobs[1].data],
              param="inner_product_param { num_output: 4 weight_filler { type: 'gaussian' "
                    "std: 0.5 } bias_filler { type: 'uniform' min: -1 max: 1 } }",
              bad_bottom_counts=[2]),
    LayerCase("InnerProduct", "transpose_axis2", lambda rng: [rng.standard_normal((2, 3, 5))],
              lambda b, layer: [b[0] @ layer.blobs[0].data],
              param="inner_product_param { num_output: 4 axis: 2 transpose: true bias_term: "
                    "false weight_filler { type: 'gaussian' std: 0.5 } }"),
    LayerCase("Convolution", "k3_s1_p1", lambda rng: [rng.standard_normal((2, 3, 5, 5))],
              lambda b, layer: _conv_case(layer, b, pad=1),
              param="convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { "
                    "type: 'gaussian' std: 0.3 } bias_filler { type: 'uniform' min: -1 max: 1 "
                    "} }", bad_bottom_counts=[0]),
    LayerCase("Convolution", "group_stride_dilation", lambda rng: [rng.standard_normal((1, 4, 7,
                                                                                         7))],
              lambda b, layer: _conv_case(layer, b, group=2, stride=2, dilation=2),
              param="convolution_param { num_output: 6 kernel_size: 2 stride: 2 dilation: 2 "
                    "group: 2 weight_filler { type: 'gaussian' std: 0.3 } bias_term: false }"),
    LayerCase("Pooling", "max_ceil_mask", lambda rng: [rng.permutation(2 * 3 * 8 * 8)
                                                       .reshape(2, 3, 8, 8) / 10.0],
              lambda b, layer: list(_pool_ref(b[0], 3, 2, 0, "MAX")),
              param="pooling_param { pool: MAX kernel_size: 3 stride: 2 }", num_tops=2,
              check_bottoms=[0], bad_bottom_counts=[2], bad_top_counts=[3]),
    LayerCase("Pooling", "max_big_pad", lambda rng: [rng.permutation(50).reshape(1, 2, 5, 5)
                                                     / 7.0],
              lambda b, layer: [_pool_ref(b[0], 3, 2, 2, "MAX")[0]],
              param="pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 2 }"),
    LayerCase("Pooling", "ave_pad", lambda rng: [rng.standard_normal((2, 2, 6, 6))],
              lambda b, layer: [_pool_ref(b[0], 3, 2, 1, "AVE")[0]],
              param="pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
    LayerCase("Pooling", "ave_big_pad_floor", lambda rng: [rng.standard_normal((1, 2, 7, 6))],
              lambda b, layer: [_pool_ref(b[0], 4, 3, 3, "AVE", ceil=False)[0]],
              param="pooling_param { pool: AVE kernel_size: 4 stride: 3 pad: 3 round_mode: "
                    "FLOOR }"),
    LayerCase("Pooling", "global_ave", lambda rng: [rng.standard_normal((2, 3, 4, 5))],
              lambda b, layer: [b[0].mean((2, 3), keepdims=True)],
              param="pooling_param { pool: AVE global_pooling: true }"),
    LayerCase("SoftmaxWithLoss", "spatial",
              lambda rng: [rng.standard_normal((2, 4, 3, 2)),
                           rng.integers(0, 4, size=(2, 1, 3, 2)).astype(np.float64)],
              _sm_loss_ref, check_bottoms=[0], bad_bottom_counts=[1, 3]),
    LayerCase("EuclideanLoss", "basic",
              lambda rng: [rng.standard_normal((4, 3)), rng.standard_normal((4, 3))],
              lambda b, layer: [np.array(((b[0] - b[1]) ** 2).sum() / 8.0)],
              bad_bottom_counts=[1, 3]),
    LayerCase("Accuracy", "top1", lambda rng: [rng.standard_normal((6, 5)),
                                               _labels(6, 5)(rng)],
              _acc_ref, grad="none", bad_bottom_counts=[1]),
]
