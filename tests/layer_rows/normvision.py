"""Rows for normalisation and the remaining vision layers: LRN, MVN, BatchNorm,
Deconvolution, SPP, Im2col, and Pooling with pool: STOCHASTIC.

References are plain NumPy written from Caffe's definitions. Gradient settings follow Caffe's
own tests for each layer (LRN 1e-2/1e-2, MVN 1e-2/1e-3, BatchNorm 1e-2/1e-4, Deconvolution
1e-2/1e-3, SPP 1e-4/1e-2, Im2col 1e-2/1e-2, stochastic pooling 1e-4/1e-2)."""

from __future__ import annotations

import itertools
import math

import numpy as np

from layer_db import LayerCase


# ---------------------------------------------------------------------------- inputs
def _normal(*shape):
    return lambda rng: [rng.standard_normal(shape)]


def _distinct(*shape, scale=0.1):
    """Well separated values (no max-pooling near-ties)."""
    return lambda rng: [rng.permutation(math.prod(shape)).reshape(shape) * scale]


def _positive(*shape):
    return lambda rng: [rng.uniform(0.1, 1.0, size=shape)]


# ---------------------------------------------------------------------------- LRN
def _lrn_ref(size, alpha=1.0, beta=0.75, k=1.0, across=True):
    def ref(bottoms, layer):
        x = bottoms[0].astype(np.float64)
        n, c, h, w = x.shape
        pad = (size - 1) // 2
        sq = x * x
        if across:
            padded = np.pad(sq, ((0, 0), (pad, pad), (0, 0), (0, 0)))
            total = sum(padded[:, i:i + c] for i in range(size))
            scale = k + alpha / size * total
        else:
            padded = np.pad(sq, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            total = sum(padded[:, :, i:i + h, j:j + w]
                        for i in range(size) for j in range(size))
            scale = 1.0 + alpha / size ** 2 * total
        return [x * scale ** -beta]
    return ref


# ---------------------------------------------------------------------------- MVN
def _mvn_ref(normalize_variance=True, across_channels=False, eps=1e-9):
    def ref(bottoms, layer):
        x = bottoms[0].astype(np.float64)
        legacy = tuple(x.shape) + (1,) * (4 - x.ndim)
        rows = x.reshape(legacy[0] if across_channels else legacy[0] * legacy[1], -1)
        y = rows - rows.mean(1, keepdims=True)
        if normalize_variance:
            y = y / (np.sqrt((y * y).mean(1, keepdims=True)) + eps)
        return [y.reshape(legacy)]
    return ref


# ---------------------------------------------------------------------------- BatchNorm
def _bn_stats(x):
    x3 = x.reshape(x.shape[0], x.shape[1] if x.ndim > 1 else 1, -1).astype(np.float64)
    mean = x3.mean((0, 2))
    var = ((x3 - mean[None, :, None]) ** 2).mean((0, 2))
    return x3, mean, var


def _bn_batch_ref(eps=1e-5):
    def ref(bottoms, layer):
        x3, mean, var = _bn_stats(bottoms[0])
        y = (x3 - mean[None, :, None]) / np.sqrt(var + eps)[None, :, None]
        return [y.reshape(bottoms[0].shape)]
    return ref


def _bn_stats_updated(layer, bottom, top):
    """After one forward from zero statistics: the batch mean, the m/(m-1)-corrected
    variance and a factor of 1."""
    x = bottom[0].data
    _, mean, var = _bn_stats(x)
    m = x.size // mean.size
    np.testing.assert_allclose(layer.blobs[0].data, mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.blobs[1].data, var * m / (m - 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(layer.blobs[2].data, [1.0])


def _bn_zero_stats_ref(eps=1e-5):
    """Global statistics that are all zero (factor 0): mean 0, variance 0."""
    return lambda bottoms, layer: [bottoms[0] / np.sqrt(eps)]


# ---------------------------------------------------------------------------- Deconvolution
def _deconv_ref(stride=1, pad=0, dilation=1, group=1):
    def ref(bottoms, layer):
        x = bottoms[0].astype(np.float64)
        w = layer.blobs[0].data.astype(np.float64)
        b = layer.blobs[1].data.astype(np.float64) if len(layer.blobs) > 1 else None
        n, c, h, wd = x.shape
        _, og, kh, kw = w.shape
        cg = c // group
        span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
        full = np.zeros((n, og * group, stride * (h - 1) + span_h, stride * (wd - 1) + span_w))
        for g in range(group):
            wg = w[g * cg:(g + 1) * cg]
            for i in range(h):
                for j in range(wd):
                    contrib = np.einsum("nc,cokl->nokl", x[:, g * cg:(g + 1) * cg, i, j], wg)
                    full[:, g * og:(g + 1) * og,
                         i * stride:i * stride + span_h:dilation,
                         j * stride:j * stride + span_w:dilation] += contrib
        out = full[:, :, pad:full.shape[2] - pad, pad:full.shape[3] - pad]
        if b is not None:
            out = out + b[None, :, None, None]
        return [out]
    return ref


# ---------------------------------------------------------------------------- pooling helpers
def _pool_axis(size, k, s, p):
    """Caffe's pooled length (round up, last window must start inside input + pad)."""
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def _windows(x, kernel, stride, pad):
    """Yield (i, j, clipped window, padded-window area) over a (N, C, H, W) array."""
    h, w = x.shape[2:]
    oh, ow = (_pool_axis(n, k, s, p) for n, k, s, p in zip((h, w), kernel, stride, pad))
    for i, j in itertools.product(range(oh), range(ow)):
        hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
        he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
        area = (he - hs) * (we - ws)
        yield i, j, x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)], area, (oh, ow)


def _pool(x, kernel, stride, pad, method):
    n, c = x.shape[:2]
    out = None
    for i, j, win, area, shape in _windows(x, kernel, stride, pad):
        if out is None:
            out = np.zeros((n, c) + shape)
        if method == "MAX":
            out[:, :, i, j] = win.max((2, 3))
        elif method == "AVE":
            out[:, :, i, j] = win.sum((2, 3)) / area
        else:  # STOCHASTIC, TEST phase
            out[:, :, i, j] = (win * win).sum((2, 3)) / win.sum((2, 3))
    return out


# ---------------------------------------------------------------------------- SPP
def _spp_ref(height, method):
    def ref(bottoms, layer):
        x = bottoms[0].astype(np.float64)
        h, w = x.shape[2:]
        levels = []
        for level in range(height):
            bins = 2 ** level
            kh, kw = -(-h // bins), -(-w // bins)
            pad = ((kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2)
            levels.append(_pool(x, (kh, kw), (kh, kw), pad, method))
        if height == 1:
            return levels
        return [np.concatenate([v.reshape(x.shape[0], -1) for v in levels], axis=1)]
    return ref


# ---------------------------------------------------------------------------- Im2col
def _im2col_ref(kernel, stride, pad, dilation, axis=1):
    def ref(bottoms, layer):
        x = bottoms[0].astype(np.float64)
        lead = x.shape[:axis]
        x = x.reshape((-1,) + x.shape[axis:])
        c, spatial = x.shape[1], x.shape[2:]
        nd = len(spatial)
        ks, ss, ps, ds = (v if isinstance(v, tuple) else (v,) * nd
                          for v in (kernel, stride, pad, dilation))
        xp = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in ps))
        out = tuple((n + 2 * p - (d * (k - 1) + 1)) // s + 1
                    for n, k, s, p, d in zip(spatial, ks, ss, ps, ds))
        cols = np.zeros((x.shape[0], c) + ks + out)
        for offs in itertools.product(*(range(k) for k in ks)):
            index = tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                          for o, d, s, n in zip(offs, ds, ss, out))
            cols[(slice(None), slice(None)) + offs] = xp[(slice(None), slice(None)) + index]
        return [cols.reshape(lead + (c * math.prod(ks),) + out)]
    return ref


# ---------------------------------------------------------------------------- stochastic
def _sampled_from_windows(kernel, stride):
    """Every TRAIN output is one of the values in its window."""
    def check(layer, bottom, top):
        x = bottom[0].data.astype(np.float64)
        y = top[0].data
        for i, j, win, _, _ in _windows(x, kernel, stride, (0, 0)):
            flat = win.reshape(win.shape[0], win.shape[1], -1)
            hit = np.isclose(flat, y[:, :, i, j][:, :, None], rtol=0, atol=1e-6).any(-1)
            assert hit.all(), f"output ({i}, {j}) is not an element of its window"
    return check


def _conv_param(body, filler=True):
    fill = (" weight_filler { type: 'gaussian' std: 0.3 } bias_filler { type: 'uniform' "
            "min: -0.5 max: 0.5 }") if filler else ""
    return f"convolution_param {{ {body}{fill} }}"


ROWS = [
    # LRN
    LayerCase("LRN", "across_default", _normal(2, 7, 3, 3), _lrn_ref(5), threshold=1e-2,
              bad_bottom_counts=[0, 2], bad_top_counts=[2]),
    LayerCase("LRN", "across_large_region", _normal(2, 7, 3, 3),
              _lrn_ref(15, alpha=0.5, beta=0.6, k=2.0), threshold=1e-2,
              param="lrn_param { local_size: 15 alpha: 0.5 beta: 0.6 k: 2 }"),
    LayerCase("LRN", "within_channel", _normal(2, 3, 5, 6),
              _lrn_ref(3, alpha=0.7, beta=0.75, across=False), threshold=1e-2,
              param="lrn_param { local_size: 3 alpha: 0.7 norm_region: WITHIN_CHANNEL k: 5 }"),
    LayerCase("LRN", "within_channel_size5", _normal(1, 2, 3, 4),
              _lrn_ref(5, alpha=2.0, beta=0.5, across=False), threshold=1e-2,
              param="lrn_param { local_size: 5 alpha: 2 beta: 0.5 norm_region: "
                    "WITHIN_CHANNEL }"),
    # MVN
    LayerCase("MVN", "default", _normal(2, 3, 4, 5), _mvn_ref(), threshold=1e-3,
              bad_bottom_counts=[0, 2], bad_top_counts=[2]),
    LayerCase("MVN", "mean_only", _normal(2, 3, 4, 5), _mvn_ref(normalize_variance=False),
              param="mvn_param { normalize_variance: false }", threshold=1e-3),
    LayerCase("MVN", "across_channels", _normal(2, 3, 4, 5),
              _mvn_ref(across_channels=True), param="mvn_param { across_channels: true }",
              threshold=1e-3),
    LayerCase("MVN", "3d_input_legacy_top", _normal(2, 3, 6),
              _mvn_ref(across_channels=True), param="mvn_param { across_channels: true }",
              threshold=1e-3),
    LayerCase("MVN", "eps_after_sqrt", _normal(2, 3, 4, 5), _mvn_ref(eps=0.5),
              param="mvn_param { eps: 0.5 }", grad="none"),
    # BatchNorm
    LayerCase("BatchNorm", "train_batch_stats", _normal(2, 3, 3, 3), _bn_batch_ref(),
              check=_bn_stats_updated, threshold=1e-4, bad_bottom_counts=[0, 2],
              bad_top_counts=[2]),
    LayerCase("BatchNorm", "train_2d_eps", _normal(6, 4), _bn_batch_ref(eps=0.1),
              param="batch_norm_param { eps: 0.1 moving_average_fraction: 0.5 }",
              check=_bn_stats_updated, threshold=1e-4),
    LayerCase("BatchNorm", "test_zero_global_stats", _normal(2, 3, 3, 2),
              _bn_zero_stats_ref(), phase="TEST", threshold=1e-4),
    LayerCase("BatchNorm", "train_use_global_stats", _normal(3, 2, 5),
              _bn_zero_stats_ref(eps=1e-3),
              param="batch_norm_param { use_global_stats: true eps: 0.001 }", threshold=1e-4),
    # Deconvolution
    LayerCase("Deconvolution", "k3_s2_p1", _normal(2, 3, 4, 4), _deconv_ref(2, 1),
              param=_conv_param("num_output: 4 kernel_size: 3 stride: 2 pad: 1"),
              bad_bottom_counts=[0]),
    LayerCase("Deconvolution", "group_dilation_nobias", _normal(1, 4, 3, 3),
              _deconv_ref(1, 1, dilation=2, group=2),
              param="convolution_param { num_output: 6 kernel_size: 2 pad: 1 dilation: 2 "
                    "group: 2 bias_term: false weight_filler { type: 'gaussian' std: 0.3 } }"),
    LayerCase("Deconvolution", "two_bottoms", lambda rng: [rng.standard_normal((1, 2, 3, 3)),
                                                           rng.standard_normal((1, 2, 3, 3))],
              lambda b, layer: [_deconv_ref(3)([x], layer)[0] for x in b], num_tops=2,
              param=_conv_param("num_output: 3 kernel_size: 3 stride: 3"),
              bad_top_counts=[1]),
    # SPP
    LayerCase("SPP", "max_h3", _distinct(1, 2, 9, 8), _spp_ref(3, "MAX"), stepsize=1e-4,
              threshold=1e-2, param="spp_param { pyramid_height: 3 pool: MAX }",
              bad_bottom_counts=[2], bad_top_counts=[2]),
    LayerCase("SPP", "ave_h2", _normal(2, 3, 7, 5), _spp_ref(2, "AVE"), stepsize=1e-4,
              threshold=1e-2, param="spp_param { pyramid_height: 2 pool: AVE }"),
    LayerCase("SPP", "max_h1_keeps_4d", _distinct(2, 3, 4, 5), _spp_ref(1, "MAX"),
              stepsize=1e-4, threshold=1e-2, param="spp_param { pyramid_height: 1 }"),
    # Im2col
    LayerCase("Im2col", "k3_p1", _normal(2, 3, 5, 5), _im2col_ref(3, 1, 1, 1),
              param="convolution_param { kernel_size: 3 pad: 1 }", threshold=1e-2,
              bad_bottom_counts=[2], bad_top_counts=[2]),
    LayerCase("Im2col", "rect_stride_dilation", _normal(1, 2, 7, 8),
              _im2col_ref((2, 3), (2, 1), (1, 0), 2), threshold=1e-2,
              param="convolution_param { kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 "
                    "pad_h: 1 pad_w: 0 dilation: 2 }"),
    LayerCase("Im2col", "1d", _normal(2, 3, 7), _im2col_ref(3, 2, 1, 1), threshold=1e-2,
              param="convolution_param { kernel_size: 3 stride: 2 pad: 1 }"),
    LayerCase("Im2col", "3d", _normal(1, 2, 3, 4, 4), _im2col_ref((2, 3, 2), 1, (0, 1, 1), 1),
              threshold=1e-2, param="convolution_param { kernel_size: 2 kernel_size: 3 "
                                    "kernel_size: 2 pad: 0 pad: 1 pad: 1 }"),
    LayerCase("Im2col", "axis2", _normal(2, 2, 3, 4, 4), _im2col_ref(2, 2, 0, 1, axis=2),
              threshold=1e-2, param="convolution_param { axis: 2 kernel_size: 2 stride: 2 }"),
    # Pooling STOCHASTIC
    LayerCase("Pooling", "stochastic_train", _positive(2, 3, 6, 5), None,
              param="pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }",
              check=_sampled_from_windows((3, 3), (2, 2)), stepsize=1e-4, threshold=1e-2),
    LayerCase("Pooling", "stochastic_test", _positive(2, 3, 6, 5),
              lambda b, layer: [_pool(b[0].astype(np.float64), (3, 2), (2, 2), (0, 0),
                                      "STOCHASTIC")],
              param="pooling_param { pool: STOCHASTIC kernel_h: 3 kernel_w: 2 stride: 2 }",
              phase="TEST", threshold=1e-3),
]
