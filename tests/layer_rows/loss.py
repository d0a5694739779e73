"""Rows for the loss family: MultinomialLogisticLoss, InfogainLoss, HingeLoss,
SigmoidCrossEntropyLoss, ContrastiveLoss, and further SoftmaxWithLoss / Accuracy
configurations (normalization modes, ignore_label, axis, spatial inputs, extra tops).

Gradient settings follow Caffe's own tests for each layer."""

from __future__ import annotations

import numpy as np

from layer_db import LayerCase

LOG_THRESHOLD = 1e-20
FLT_MIN = 1.17549435e-38


# ---------------------------------------------------------------------------- inputs
def _labels(shape, classes, ignore=None, every=3):
    """Integer labels as floats; with ``ignore``, every ``every``-th item is set to it."""
    def make(rng):
        lab = rng.integers(0, classes, size=shape).astype(np.float64)
        if ignore is not None:
            lab.reshape(-1)[::every] = ignore
        return lab
    return make


def _scores_and_labels(shape, classes, label_shape, ignore=None):
    def make(rng):
        return [rng.standard_normal(shape), _labels(label_shape, classes, ignore)(rng)]
    return make


def _normalizer(mode, outer, inner, valid):
    value = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(value))


def _move_axis(x, axis):
    """(outer, C, inner) view of ``x`` with the class axis in the middle."""
    axis = axis % x.ndim
    outer = int(np.prod(x.shape[:axis]))
    return x.reshape(outer, x.shape[axis], -1)


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------- references
def _mll_ref(bottoms, layer):
    p, lab = bottoms
    n = p.shape[0]
    p = p.reshape(n, -1).astype(np.float64)
    picked = p[np.arange(n), lab.reshape(-1).astype(int)]
    return [np.array(-np.log(np.maximum(picked, LOG_THRESHOLD)).sum() / n)]


def _hinge_margins(x, lab):
    n = x.shape[0]
    x = x.reshape(n, -1).astype(np.float64)
    s = np.ones_like(x)
    s[np.arange(n), lab.reshape(-1)[:n].astype(int)] = -1
    return np.maximum(0.0, 1.0 + s * x)


def _hinge_ref(squared):
    def ref(bottoms, layer):
        t = _hinge_margins(*bottoms)
        return [np.array(((t * t) if squared else t).sum() / bottoms[0].shape[0])]
    return ref


def _hinge_leaves_margins_in_diff(layer, bottom, top):
    expected = _hinge_margins(bottom[0].data, bottom[1].data).reshape(bottom[0].shape)
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-5, atol=1e-6)


def _sigmoid_ce_ref(mode, ignore=None):
    def ref(bottoms, layer):
        x, t = (a.astype(np.float64) for a in bottoms)
        t = t.reshape(x.shape)
        p = 1.0 / (1.0 + np.exp(-x))
        per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        valid = np.ones(x.shape, bool) if ignore is None else np.trunc(t) != ignore
        norm = _normalizer(mode, x.shape[0], x[0].size, valid.sum())
        return [np.array(per[valid].sum() / norm)]
    return ref


def _contrastive_ref(margin=1.0, legacy=False):
    def ref(bottoms, layer):
        a, b, y = (v.astype(np.float64) for v in bottoms)
        n = a.shape[0]
        d2 = ((a.reshape(n, -1) - b.reshape(n, -1)) ** 2).sum(1)
        far = (np.maximum(margin - d2, 0) if legacy
               else np.maximum(margin - np.sqrt(d2), 0) ** 2)
        return [np.array(np.where(np.trunc(y.reshape(-1)) != 0, d2, far).sum() / n / 2)]
    return ref


def _infogain_ref(axis=1, mode="VALID", ignore=None, with_prob=False):
    def ref(bottoms, layer):
        x, lab, h = (v.astype(np.float64) for v in bottoms)
        p = _softmax(_move_axis(x, axis), 1)  # (outer, K, inner)
        k = p.shape[1]
        lab = lab.reshape(p.shape[0], p.shape[2]).astype(int)
        valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
        h = h.reshape(k, k)
        logp = np.log(np.maximum(p, LOG_THRESHOLD))
        loss = 0.0
        for i, j in zip(*np.nonzero(valid)):
            loss -= (h[lab[i, j]] * logp[i, :, j]).sum()
        loss /= _normalizer(mode, p.shape[0], p.shape[2], valid.sum())
        return [np.array(loss)] + ([p.reshape(x.shape)] if with_prob else [])
    return ref


def _softmax_loss_ref(axis=1, mode="VALID", ignore=None, with_prob=False):
    def ref(bottoms, layer):
        x, lab = (v.astype(np.float64) for v in bottoms)
        p = _softmax(_move_axis(x, axis), 1)
        lab = lab.reshape(p.shape[0], p.shape[2]).astype(int)
        valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
        i, j = np.nonzero(valid)
        loss = -np.log(np.maximum(p[i, lab[i, j], j], FLT_MIN)).sum()
        loss /= _normalizer(mode, p.shape[0], p.shape[2], valid.sum())
        return [np.array(loss)] + ([p.reshape(x.shape)] if with_prob else [])
    return ref


def _accuracy_ref(top_k=1, axis=1, ignore=None, per_class=False):
    def ref(bottoms, layer):
        x, lab = bottoms
        s = _move_axis(x, axis)
        k = s.shape[1]
        lab = lab.reshape(s.shape[0], s.shape[2]).astype(int)
        hits, nums = np.zeros(k), np.zeros(k)
        for i in range(s.shape[0]):
            for j in range(s.shape[2]):
                c = lab[i, j]
                if c == ignore:
                    continue
                nums[c] += 1
                hits[c] += (s[i, :, j] >= s[i, c, j]).sum() <= top_k
        acc = np.array(hits.sum() / nums.sum() if nums.sum() else 0.0)
        per = np.divide(hits, nums, out=np.zeros(k), where=nums > 0)
        return [acc, per] if per_class else [acc]
    return ref


def _probs(shape):
    """Caffe's PositiveUnitball filler: positive rows summing to 1."""
    def make(rng):
        p = rng.uniform(0, 1, size=shape)
        p /= p.reshape(shape[0], -1).sum(1).reshape((-1,) + (1,) * (len(shape) - 1))
        return p
    return make


def _pairs(n, c):
    def make(rng):
        sim = rng.integers(0, 2, size=(n, 1, 1, 1)).astype(np.float64)
        return [0.3 * rng.standard_normal((n, c, 1, 1)), 0.3 * rng.standard_normal((n, c, 1, 1)),
                sim]
    return make


def _infogain_inputs(shape, label_shape, k, ignore=None):
    def make(rng):
        return [rng.uniform(-0.5, 2.0, size=shape), _labels(label_shape, k, ignore)(rng),
                rng.uniform(0.1, 2.0, size=(1, 1, k, k))]
    return make


def _sigmoid_inputs(shape, ignore=None):
    def make(rng):
        t = rng.uniform(0, 1, size=shape)
        if ignore is not None:
            t.reshape(-1)[::4] = ignore
        return [rng.standard_normal(shape), t]
    return make


INFOGAIN_GRAD = dict(grad="exhaustive", check_bottoms=[0], stepsize=1e-4, threshold=2e-2)
SM_GRAD = dict(check_bottoms=[0], stepsize=1e-2, threshold=1e-2)

ROWS = [
    # MultinomialLogisticLoss: Caffe's test uses (1e-2, 2e-2, kink 0 +- 0.05), exhaustive
    LayerCase("MultinomialLogisticLoss", "basic",
              lambda rng: [_probs((6, 5))(rng), _labels((6,), 5)(rng)], _mll_ref,
              grad="exhaustive", check_bottoms=[0], stepsize=1e-2, threshold=2e-2,
              kink=0.0, kink_range=0.05, bad_bottom_counts=[1, 3], bad_top_counts=[2]),
    LayerCase("MultinomialLogisticLoss", "4d_probs",
              lambda rng: [_probs((4, 3, 2, 1))(rng), _labels((4, 1, 1, 1), 6)(rng)], _mll_ref,
              grad="exhaustive", check_bottoms=[0], stepsize=1e-2, threshold=2e-2,
              kink=0.0, kink_range=0.05),
    # HingeLoss: L1 (1e-2, 2e-3, kink 1 +- 0.01), L2 (1e-2, 1e-2); scores with std 10
    LayerCase("HingeLoss", "l1",
              lambda rng: [10 * rng.standard_normal((6, 5)), _labels((6,), 5)(rng)],
              _hinge_ref(False), grad="exhaustive", check_bottoms=[0], stepsize=1e-2,
              threshold=2e-3, kink=1.0, kink_range=0.01, check=_hinge_leaves_margins_in_diff,
              bad_bottom_counts=[1, 3]),
    LayerCase("HingeLoss", "l2",
              lambda rng: [10 * rng.standard_normal((6, 5)), _labels((6,), 5)(rng)],
              _hinge_ref(True), param="hinge_loss_param { norm: L2 }", grad="exhaustive",
              check_bottoms=[0], stepsize=1e-2, threshold=1e-2),
    LayerCase("HingeLoss", "l1_small_scores_4d",
              lambda rng: [rng.standard_normal((4, 3, 2, 1)), _labels((4,), 6)(rng)],
              _hinge_ref(False), grad="exhaustive", check_bottoms=[0], stepsize=1e-2,
              threshold=2e-3, kink=1.0, kink_range=0.01),
    # SigmoidCrossEntropyLoss: (1e-2, 1e-2), exhaustive over bottom 0
    LayerCase("SigmoidCrossEntropyLoss", "default_batch_size", _sigmoid_inputs((4, 5)),
              _sigmoid_ce_ref("BATCH_SIZE"), grad="exhaustive", check_bottoms=[0],
              threshold=1e-2, bad_bottom_counts=[1, 3]),
    LayerCase("SigmoidCrossEntropyLoss", "ignore_valid", _sigmoid_inputs((4, 5), ignore=-1),
              _sigmoid_ce_ref("VALID", ignore=-1),
              param="loss_param { ignore_label: -1 normalization: VALID }",
              grad="exhaustive", check_bottoms=[0], threshold=1e-2),
    LayerCase("SigmoidCrossEntropyLoss", "legacy_normalize", _sigmoid_inputs((3, 2, 2)),
              _sigmoid_ce_ref("VALID"), param="loss_param { normalize: true }",
              grad="exhaustive", check_bottoms=[0], threshold=1e-2),
    LayerCase("SigmoidCrossEntropyLoss", "full_spatial", _sigmoid_inputs((2, 3, 2, 2)),
              _sigmoid_ce_ref("FULL"), param="loss_param { normalization: FULL }",
              grad="exhaustive", check_bottoms=[0], threshold=1e-2),
    LayerCase("SigmoidCrossEntropyLoss", "none_ignore_batch",
              _sigmoid_inputs((3, 4), ignore=5), _sigmoid_ce_ref("NONE", ignore=5),
              param="loss_param { ignore_label: 5 normalization: NONE }",
              grad="exhaustive", check_bottoms=[0], threshold=1e-2),
    # ContrastiveLoss: (1e-2, 1e-2), exhaustive over bottoms 0 and 1
    LayerCase("ContrastiveLoss", "default", _pairs(8, 4), _contrastive_ref(),
              grad="exhaustive", check_bottoms=[0, 1], threshold=1e-2,
              bad_bottom_counts=[2, 4]),
    LayerCase("ContrastiveLoss", "legacy", _pairs(8, 4), _contrastive_ref(legacy=True),
              param="contrastive_loss_param { legacy_version: true }", grad="exhaustive",
              check_bottoms=[0, 1], threshold=1e-2),
    LayerCase("ContrastiveLoss", "margin2_2d",
              lambda rng: [0.5 * rng.standard_normal((6, 3)), 0.5 * rng.standard_normal((6, 3)),
                           rng.integers(0, 2, size=(6,)).astype(np.float64)],
              _contrastive_ref(margin=2.0), param="contrastive_loss_param { margin: 2 }",
              grad="exhaustive", check_bottoms=[0, 1], threshold=1e-2),
    # InfogainLoss: (1e-4, 2e-2), exhaustive over bottom 0 (Caffe's test: axis 2, H bottom)
    LayerCase("InfogainLoss", "h_bottom_axis2", _infogain_inputs((4, 2, 5, 2), (4, 2, 1, 2), 5),
              _infogain_ref(axis=2), param="infogain_loss_param { axis: 2 }", **INFOGAIN_GRAD,
              bad_bottom_counts=[1, 4], bad_top_counts=[3]),
    LayerCase("InfogainLoss", "prob_top", _infogain_inputs((4, 2, 5, 2), (4, 2, 1, 2), 5),
              _infogain_ref(axis=2, with_prob=True),
              param="infogain_loss_param { axis: 2 } loss_weight: 1 loss_weight: 0",
              num_tops=2, grad="none"),
    LayerCase("InfogainLoss", "ignore_batch_size", _infogain_inputs((6, 4), (6,), 4, ignore=2),
              _infogain_ref(mode="BATCH_SIZE", ignore=2),
              param="loss_param { ignore_label: 2 normalization: BATCH_SIZE }", **INFOGAIN_GRAD),
    LayerCase("InfogainLoss", "spatial_full", _infogain_inputs((2, 3, 2, 2), (2, 1, 2, 2), 3),
              _infogain_ref(mode="FULL"), param="loss_param { normalization: FULL }",
              **INFOGAIN_GRAD),
    LayerCase("InfogainLoss", "none_axis_last", _infogain_inputs((2, 3, 4), (2, 3), 4),
              _infogain_ref(axis=-1, mode="NONE"),
              param="infogain_loss_param { axis: -1 } loss_param { normalization: NONE }",
              **INFOGAIN_GRAD),
    # SoftmaxWithLoss: Caffe's test uses (1e-2, 1e-2) on bottom 0
    LayerCase("SoftmaxWithLoss", "ignore_valid",
              _scores_and_labels((4, 5, 2), 5, (4, 1, 2), ignore=1),
              _softmax_loss_ref(ignore=1), param="loss_param { ignore_label: 1 }", **SM_GRAD),
    LayerCase("SoftmaxWithLoss", "legacy_normalize_false",
              _scores_and_labels((4, 5, 2), 5, (4, 2), ignore=0),
              _softmax_loss_ref(mode="BATCH_SIZE", ignore=0),
              param="loss_param { ignore_label: 0 normalize: false }", **SM_GRAD),
    LayerCase("SoftmaxWithLoss", "full_axis2", _scores_and_labels((2, 3, 4), 4, (2, 3)),
              _softmax_loss_ref(axis=2, mode="FULL"),
              param="softmax_param { axis: 2 } loss_param { normalization: FULL }", **SM_GRAD),
    LayerCase("SoftmaxWithLoss", "none_ignore", _scores_and_labels((6, 3), 3, (6,), ignore=-1),
              _softmax_loss_ref(mode="NONE", ignore=-1),
              param="loss_param { ignore_label: -1 normalization: NONE }", **SM_GRAD),
    LayerCase("SoftmaxWithLoss", "prob_top", _scores_and_labels((3, 4, 2), 4, (3, 2)),
              _softmax_loss_ref(with_prob=True), param="loss_weight: 1 loss_weight: 0",
              num_tops=2, grad="none", bad_top_counts=[3]),
    # Accuracy: forward only
    LayerCase("Accuracy", "top2_ignore", _scores_and_labels((10, 5), 5, (10,), ignore=3),
              _accuracy_ref(top_k=2, ignore=3), param="accuracy_param { top_k: 2 ignore_label: 3 }",
              grad="none", bad_top_counts=[3]),
    LayerCase("Accuracy", "per_class_spatial",
              _scores_and_labels((3, 4, 5), 4, (3, 5), ignore=0),
              _accuracy_ref(ignore=0, per_class=True), param="accuracy_param { ignore_label: 0 }",
              num_tops=2, grad="none"),
    LayerCase("Accuracy", "top3_axis_last_per_class", _scores_and_labels((2, 3, 6), 6, (2, 3)),
              _accuracy_ref(top_k=3, axis=-1, per_class=True),
              param="accuracy_param { top_k: 3 axis: -1 }", num_tops=2, grad="none"),
]
