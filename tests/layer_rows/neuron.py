"""Rows for the neuron / elementwise family: AbsVal, BNLL, ELU, Exp, Log, Power, Sigmoid, TanH,
Threshold, Clip, Swish, PReLU, Dropout, Bias and Scale.

Gradient settings follow Caffe's own tests (stepsize 1e-2, threshold 1e-3, kink 0 / range 0.01
where the function has a kink at 0). In-place behaviour and Dropout's mask statistics are tested
in tests/layers/, and so are the 0-d (scalar) second bottoms of Bias and Scale, which
make_blobs cannot build."""

from __future__ import annotations

import numpy as np

from layer_db import LayerCase

SHAPE = (2, 3, 2, 3)
SMALL = (2, 3, 2, 2)


# ---------------------------------------------------------------------------- inputs
def _normal(shape=SHAPE, scale=1.0):
    return lambda rng: [scale * rng.standard_normal(shape)]


def _uniform(lo, hi, shape=SHAPE):
    return lambda rng: [rng.uniform(lo, hi, size=shape)]


def _away_from(points, gap=0.05, shape=SHAPE):
    """Gaussian data pushed at least ``gap`` away from each kink in ``points``."""
    def make(rng):
        x = rng.standard_normal(shape)
        for p in points:
            near = np.abs(x - p) < gap
            x[near] = p + np.where(x[near] >= p, gap, -gap)
        return [x]
    return make


def _two(shape0, shape1):
    return lambda rng: [rng.standard_normal(shape0), rng.uniform(0.5, 1.5, size=shape1)]


# ---------------------------------------------------------------------------- references
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _elu(alpha):
    return lambda b, layer: [np.where(b[0] > 0, b[0], alpha * (np.exp(b[0]) - 1.0))]


def _exp(base, scale, shift):
    def ref(b, layer):
        z = shift + scale * b[0].astype(np.float64)
        return [np.exp(z) if base == -1 else np.power(base, z)]
    return ref


def _log(base, scale, shift):
    def ref(b, layer):
        z = np.log(shift + scale * b[0].astype(np.float64))
        return [z if base == -1 else z / np.log(base)]
    return ref


def _power(power, scale, shift):
    return lambda b, layer: [np.power(shift + scale * b[0].astype(np.float64), power)]


def _clip(lo, hi):
    return lambda b, layer: [np.maximum(lo, np.minimum(b[0], hi))]


def _swish(beta):
    return lambda b, layer: [b[0] * _sigmoid(beta * b[0].astype(np.float64))]


def _prelu(b, layer):
    x = b[0].astype(np.float64)
    a = layer.blobs[0].data.astype(np.float64)
    a = a.reshape((1, -1) + (1,) * (x.ndim - 2)) if a.ndim else a
    return [np.maximum(x, 0) + a * np.minimum(x, 0)]


def _dropout_train(ratio):
    def check(layer, bottom, top):
        x, y = bottom[0].data, top[0].data
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / (1.0 - ratio), rtol=1e-6)
        assert 0 < kept.mean() < 1
    return check


def _operand_view(x_shape, operand, axis):
    """``operand`` reshaped to broadcast against ``x_shape`` from ``axis``."""
    if operand.ndim == 0:
        return operand
    axis %= len(x_shape)
    return operand.reshape((1,) * axis + operand.shape + (1,) * (len(x_shape) - axis
                                                                  - operand.ndim))


def _bias(axis=1):
    def ref(b, layer):
        operand = b[1] if len(b) > 1 else layer.blobs[0].data
        return [b[0] + _operand_view(b[0].shape, operand.astype(np.float64), axis)]
    return ref


def _scale(axis=1, bias=False):
    def ref(b, layer):
        learned = len(b) == 1
        s = (layer.blobs[0].data if learned else b[1]).astype(np.float64)
        y = b[0] * _operand_view(b[0].shape, s, axis)
        if bias:
            y = y + _operand_view(b[0].shape, layer.blobs[-1].data.astype(np.float64), axis)
        return [y]
    return ref


def _blob_shapes(*shapes):
    def check(layer, bottom, top):
        assert [b.shape for b in layer.blobs] == list(shapes)
    return check


def _row(type_, id_, bottoms, reference, param="", **kw):
    return LayerCase(type_, id_, bottoms, reference, param=param, **kw)


def _eltwise(type_, id_, bottoms, reference, param="", kink=False, **kw):
    extra = {"kink": 0.0, "kink_range": 0.01} if kink else {}
    return LayerCase(type_, id_, bottoms, reference, param=param, grad="eltwise",
                     **extra, **kw)


UNIFORM_FILLER = "filler { type: 'uniform' min: 0.5 max: 1.5 }"
BIAS_FILLER = "filler { type: 'uniform' min: -1 max: 1 }"

ROWS = [
    # AbsVal / BNLL / Sigmoid / TanH
    _eltwise("AbsVal", "plain", _normal(), lambda b, layer: [np.abs(b[0])], kink=True,
             bad_bottom_counts=[0, 2], bad_top_counts=[2]),
    _eltwise("BNLL", "plain", _normal(scale=3.0), lambda b, layer: [np.logaddexp(0.0, b[0])],
             bad_bottom_counts=[2]),
    _eltwise("Sigmoid", "plain", _normal(scale=2.0), lambda b, layer: [_sigmoid(b[0])],
             bad_bottom_counts=[2], bad_top_counts=[2]),
    _eltwise("TanH", "plain", _normal(scale=2.0), lambda b, layer: [np.tanh(b[0])],
             bad_bottom_counts=[2]),
    # ELU
    _eltwise("ELU", "alpha1", _normal(), _elu(1.0), kink=True, bad_bottom_counts=[2]),
    _eltwise("ELU", "alpha0.5", _normal(), _elu(0.5), "elu_param { alpha: 0.5 }", kink=True),
    # Exp
    _eltwise("Exp", "default", _normal(), _exp(-1, 1.0, 0.0), bad_bottom_counts=[2]),
    _eltwise("Exp", "base2_scale_shift", _normal(), _exp(2.0, 0.5, 1.0),
             "exp_param { base: 2 scale: 0.5 shift: 1 }"),
    _eltwise("Exp", "e_scale_shift", _normal(), _exp(-1, -0.7, 0.3),
             "exp_param { scale: -0.7 shift: 0.3 }"),
    # Log (inputs keep shift + scale * x positive; Caffe's Log test uses a 1e-2 threshold)
    _eltwise("Log", "default", _uniform(0.5, 2.0), _log(-1, 1.0, 0.0), threshold=1e-2,
             bad_bottom_counts=[2]),
    _eltwise("Log", "base2_scale_shift", _uniform(0.5, 2.0), _log(2.0, 0.5, 1.0),
             "log_param { base: 2 scale: 0.5 shift: 1 }", threshold=1e-2),
    _eltwise("Log", "e_shift", _uniform(0.5, 2.0), _log(-1, 1.0, 0.25),
             "log_param { shift: 0.25 }", threshold=1e-2),
    # Power: every branch of Caffe's backward
    _eltwise("Power", "square", _normal(), _power(2.0, 0.5, 1.0),
             "power_param { power: 2 scale: 0.5 shift: 1 }", bad_bottom_counts=[2]),
    _eltwise("Power", "cube_no_shift", _away_from([0.0], 0.2), _power(3.0, 0.83, 0.0),
             "power_param { power: 3 scale: 0.83 }"),
    _eltwise("Power", "fractional", _uniform(0.5, 2.0), _power(0.37, 0.83, 2.4),
             "power_param { power: 0.37 scale: 0.83 shift: 2.4 }"),
    _eltwise("Power", "linear", _normal(), _power(1.0, 0.83, -2.4),
             "power_param { power: 1 scale: 0.83 shift: -2.4 }"),
    _eltwise("Power", "power0", _normal(), _power(0.0, 0.83, -2.4),
             "power_param { power: 0 scale: 0.83 shift: -2.4 }"),
    _eltwise("Power", "scale0", _normal(), _power(2.0, 0.0, 3.0),
             "power_param { power: 2 scale: 0 shift: 3 }"),
    # Threshold (no backward in Caffe)
    _row("Threshold", "zero", _normal(), lambda b, layer: [(b[0] > 0).astype(np.float64)],
         grad="none", bad_bottom_counts=[2]),
    _row("Threshold", "0.2", _normal(), lambda b, layer: [(b[0] > 0.2).astype(np.float64)],
         "threshold_param { threshold: 0.2 }", grad="none"),
    # Clip (inputs kept away from the bounds, where the gradient jumps)
    _eltwise("Clip", "symmetric", _away_from([-0.5, 0.5]), _clip(-0.5, 0.5),
             "clip_param { min: -0.5 max: 0.5 }", bad_bottom_counts=[2]),
    _eltwise("Clip", "asymmetric", _away_from([-1.0, 0.3]), _clip(-1.0, 0.3),
             "clip_param { min: -1 max: 0.3 }"),
    # Swish
    _eltwise("Swish", "beta1", _normal(scale=2.0), _swish(1.0), bad_bottom_counts=[2]),
    _eltwise("Swish", "beta2.5", _normal(), _swish(2.5), "swish_param { beta: 2.5 }"),
    # PReLU (Caffe checks it exhaustively; the full check covers the same slopes)
    _row("PReLU", "default_filler", _normal(SMALL), _prelu, kink=0.0, kink_range=0.01,
         bad_bottom_counts=[2], bad_top_counts=[2],
         check=lambda layer, b, t: np.testing.assert_allclose(layer.blobs[0].data, 0.25)),
    _row("PReLU", "channelwise_uniform", _normal(SMALL), _prelu,
         "prelu_param { filler { type: 'uniform' min: 0.05 max: 0.5 } }", kink=0.0,
         kink_range=0.01),
    _row("PReLU", "channel_shared", _normal(SMALL), _prelu,
         "prelu_param { channel_shared: true filler { type: 'constant' value: 0.3 } }",
         kink=0.0, kink_range=0.01,
         check=_blob_shapes(())),
    _row("PReLU", "2d_bottom", _normal((4, 3)), _prelu,
         "prelu_param { filler { type: 'uniform' min: 0.05 max: 0.5 } }", kink=0.0,
         kink_range=0.01),
    # Dropout: TRAIN draws a seeded mask (the checker reseeds before every forward)
    _eltwise("Dropout", "train_0.5", _normal(SMALL), None, check=_dropout_train(0.5),
             bad_bottom_counts=[2], bad_top_counts=[2]),
    _eltwise("Dropout", "train_0.3", _normal(SMALL), None, "dropout_param { dropout_ratio: 0.3 }",
             check=_dropout_train(0.3)),
    _eltwise("Dropout", "test_identity", _normal(SMALL), lambda b, layer: [b[0]],
             phase="TEST"),
    # Bias: learned operand (one bottom) and given operand (two bottoms)
    _row("Bias", "learned_axis1", _normal(SMALL), _bias(), f"bias_param {{ {BIAS_FILLER} }}",
         bad_bottom_counts=[0, 3], bad_top_counts=[2]),
    _row("Bias", "learned_two_axes", _normal(SMALL), _bias(),
         f"bias_param {{ num_axes: 2 {BIAS_FILLER} }}"),
    _row("Bias", "learned_to_end_axis2", _normal(SMALL), _bias(2),
         f"bias_param {{ axis: 2 num_axes: -1 {BIAS_FILLER} }}"),
    _row("Bias", "learned_scalar", _normal(SMALL), _bias(0),
         f"bias_param {{ num_axes: 0 {BIAS_FILLER} }}"),
    _row("Bias", "learned_default_filler_zero", _normal(SMALL), lambda b, layer: [b[0]],
         check=lambda layer, b, t: np.testing.assert_array_equal(layer.blobs[0].data, 0)),
    _row("Bias", "bottom_axis1", _two(SMALL, (3, 2)), _bias()),
    _row("Bias", "bottom_axis_minus2", _two(SMALL, (2, 2)), _bias(-2),
         "bias_param { axis: -2 }"),
    _row("Bias", "bottom_eltwise_axis0", _two((2, 3, 2), (2, 3, 2)), _bias(0),
         "bias_param { axis: 0 }"),
    # Scale: learned operand, with and without bias, and the Caffe diff special cases
    _row("Scale", "learned_axis1", _normal(SMALL), _scale(), f"scale_param {{ {UNIFORM_FILLER} }}",
         bad_bottom_counts=[0, 3], bad_top_counts=[2]),
    _row("Scale", "learned_bias_term", _normal(SMALL), _scale(bias=True),
         f"scale_param {{ bias_term: true {UNIFORM_FILLER} bias_filler {{ type: 'uniform' "
         "min: -1 max: 1 } }"),
    _row("Scale", "learned_default_filler_one", _normal(SMALL), lambda b, layer: [b[0]],
         check=lambda layer, b, t: np.testing.assert_array_equal(layer.blobs[0].data, 1)),
    _row("Scale", "learned_scalar_bias", _normal(SMALL), _scale(0, bias=True),
         f"scale_param {{ num_axes: 0 bias_term: true {UNIFORM_FILLER} bias_filler {{ "
         "type: 'constant' value: 0.3 } }"),
    _row("Scale", "learned_eltwise", _normal(SMALL), _scale(),
         f"scale_param {{ num_axes: -1 {UNIFORM_FILLER} }}"),
    _row("Scale", "learned_axis0_two_axes", _normal(SMALL), _scale(0),
         f"scale_param {{ axis: 0 num_axes: 2 {UNIFORM_FILLER} }}"),
    _row("Scale", "learned_last_axis", _normal(SMALL), _scale(-1),
         f"scale_param {{ axis: -1 {UNIFORM_FILLER} }}"),
    _row("Scale", "bottom_axis1", _two(SMALL, (3, 2)), _scale()),
    _row("Scale", "bottom_bias_term", _two(SMALL, (3,)), _scale(bias=True),
         "scale_param { bias_term: true bias_filler { type: 'uniform' min: -1 max: 1 } }",
         check=_blob_shapes((3,))),
    _row("Scale", "bottom_eltwise", _two((2, 3), (2, 3)), _scale(0), "scale_param { axis: 0 }"),
]
