"""Rows for the utility layers: Flatten, Reshape, BatchReindex, Concat, Slice, Eltwise, Filter,
Parameter, Reduction, Silence, ArgMax, Tile, Embed, Crop."""

from __future__ import annotations

import numpy as np

from caffe.blob import Blob

from layer_db import LayerCase


def _normal(*shapes):
    return lambda rng: [rng.standard_normal(s) for s in shapes]


def _distinct(*shapes):
    """Values at least 0.1 apart (no near-ties for MAX), random signs and order."""
    def make(rng):
        total = sum(int(np.prod(s)) for s in shapes)
        values = (rng.permutation(total) - total / 2) / 10.0
        out, start = [], 0
        for s in shapes:
            n = int(np.prod(s))
            out.append(values[start:start + n].reshape(s))
            start += n
        return out
    return make


def _with_fixed(make, *fixed):
    """Bottoms from ``make`` followed by fixed arrays (indices, selectors)."""
    return lambda rng: make(rng) + [np.asarray(f, dtype=np.float64) for f in fixed]


def _same_memory(a, b) -> bool:
    """Whether two torch tensors share storage (on any device)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _is_view(layer, bottom, top):
    assert _same_memory(top[0].tensor, bottom[0].tensor), "the top must be a view of the bottom"


# ---------------------------------------------------------------- ArgMax reference
def _argmax_ref(x, top_k, out_max_val, axis):
    """Descending by value, ties to the larger index (Caffe's std::greater on pairs)."""
    if axis is None:
        rows = x.reshape(x.shape[0], -1)
    else:
        rows = np.moveaxis(x, axis, -1)
    index = np.broadcast_to(np.arange(rows.shape[-1]), rows.shape)
    order = np.lexsort((-index, -rows), axis=-1)[..., :top_k]
    values = np.take_along_axis(rows, order, -1)
    if axis is not None:
        return np.moveaxis(values if out_max_val else order.astype(float), -1, axis)
    out = np.concatenate([order, values], -1) if out_max_val else order.astype(float)
    shape = [1] * max(x.ndim, 3)
    shape[0], shape[1], shape[2] = x.shape[0], 2 if out_max_val else 1, top_k
    return out.reshape(shape)


def _argmax_row(id_, shape, param, top_k=1, out_max_val=False, axis=None, make=None, **kw):
    return LayerCase(
        "ArgMax", id_, make or _normal(shape),
        lambda b, layer: [_argmax_ref(b[0], top_k, out_max_val, axis)],
        param=f"argmax_param {{ {param} }}" if param else "", grad="none", **kw)


# ---------------------------------------------------------------- Eltwise checks
def _max_tie_check(layer, bottom, top):
    """Equal bottoms 0 and 1: the max (and its gradient) goes to bottom 1."""
    top[0].diff[...] = 1.0
    layer.Backward(top, [True] * len(bottom), bottom)
    assert not bottom[0].diff.any()
    np.testing.assert_array_equal(bottom[1].diff, 1.0)


def _tie_bottoms(rng):
    x = rng.standard_normal((2, 3))
    return [x, x.copy(), x - 1.0]


# ---------------------------------------------------------------- Crop reference
def _crop(x, ref, axis, offsets):
    index = [slice(None)] * axis
    for i, off in enumerate(offsets, axis):
        index.append(slice(off, off + ref.shape[i]))
    return [x[tuple(index)]]


# ---------------------------------------------------------------- Embed reference
def _embed_ref(b, layer):
    w = layer.blobs[0].data
    y = w[b[0].astype(int)]
    if len(layer.blobs) > 1:
        y = y + layer.blobs[1].data
    return [y]


def _filter_setup_shape(layer, bottom, top):
    """At set-up the top keeps every item; a forward then keeps the selected ones."""
    fresh = layer.__class__(layer.layer_param)
    tops = [Blob() for _ in top]
    fresh.SetUp(bottom, tops)
    assert tops[0].shape[0] == bottom[0].shape[0]


def _shares_param(layer, top):
    """The Parameter top is the param blob: same data and diff memory."""
    assert _same_memory(top[0].tensor, layer.blobs[0].tensor)
    assert _same_memory(top[0].diff_tensor, layer.blobs[0].diff_tensor)


def _silence_zero_diffs(layer, bottom):
    """Silence zeroes the diffs it propagates to and leaves the others alone."""
    for b in bottom:
        b.diff[...] = 5.0
    layer.Backward([], [True, False], bottom)
    assert not bottom[0].diff.any()
    np.testing.assert_array_equal(bottom[1].diff, 5.0)


_EMBED = ("embed_param {{ input_dim: 5 num_output: 4 {bias} weight_filler {{ type: 'uniform' "
          "min: -1 max: 1 }} bias_filler {{ type: 'uniform' min: -0.5 max: 0.5 }} }}")


ROWS = [
    # ------------------------------------------------------------ Flatten
    LayerCase("Flatten", "default", _normal((2, 3, 2, 2)),
              lambda b, layer: [b[0].reshape(2, 12)], check=_is_view,
              bad_bottom_counts=[0, 2], bad_top_counts=[2]),
    LayerCase("Flatten", "axis1_end2", _normal((2, 3, 2, 2)),
              lambda b, layer: [b[0].reshape(2, 6, 2)],
              param="flatten_param { axis: 1 end_axis: 2 }"),
    LayerCase("Flatten", "negative_axes", _normal((2, 3, 2, 2)),
              lambda b, layer: [b[0].reshape(6, 2, 2)],
              param="flatten_param { axis: -4 end_axis: -3 }"),
    LayerCase("Flatten", "end_before_axis_inserts_1", _normal((2, 3, 4)),
              lambda b, layer: [b[0].reshape(2, 3, 1, 4)],
              param="flatten_param { axis: 2 end_axis: 1 }"),
    # ------------------------------------------------------------ Reshape
    LayerCase("Reshape", "zero_and_minus1", _normal((2, 3, 4, 5)),
              lambda b, layer: [b[0].reshape(2, 2, 30)],
              param="reshape_param { shape { dim: 0 dim: 2 dim: -1 } }", check=_is_view,
              bad_bottom_counts=[0, 2], bad_top_counts=[2]),
    LayerCase("Reshape", "axis1_num_axes1", _normal((2, 6, 4)),
              lambda b, layer: [b[0].reshape(2, 3, 2, 4)],
              param="reshape_param { shape { dim: 3 dim: -1 } axis: 1 num_axes: 1 }"),
    LayerCase("Reshape", "append_axes", _normal((2, 3)),
              lambda b, layer: [b[0].reshape(2, 3, 1, 1)],
              param="reshape_param { shape { dim: 1 dim: 1 } axis: -1 num_axes: 0 }"),
    LayerCase("Reshape", "prepend_axis", _normal((2, 3)),
              lambda b, layer: [b[0].reshape(1, 2, 3)],
              param="reshape_param { shape { dim: 1 } axis: 0 num_axes: 0 }"),
    LayerCase("Reshape", "all_minus1", _normal((2, 3, 4)),
              lambda b, layer: [b[0].reshape(24)],
              param="reshape_param { shape { dim: -1 } }"),
    LayerCase("Reshape", "copy_trailing_zero", _normal((2, 3, 4)),
              lambda b, layer: [b[0].reshape(8, 3)],
              param="reshape_param { shape { dim: -1 dim: 0 } }"),
    # ------------------------------------------------------------ BatchReindex
    LayerCase("BatchReindex", "repeat", _with_fixed(_normal((5, 2, 3)), [2, 0, 2, 4]),
              lambda b, layer: [b[0][b[1].astype(int)]], check_bottoms=[0],
              stepsize=1e-4, threshold=1e-2,
              bad_bottom_counts=[1, 3], bad_top_counts=[2]),
    LayerCase("BatchReindex", "one_d_more_items", _with_fixed(_normal((3,)), [1, 1, 0, 2, 1]),
              lambda b, layer: [b[0][b[1].astype(int)]], check_bottoms=[0],
              stepsize=1e-4, threshold=1e-2),
    # ------------------------------------------------------------ Concat
    LayerCase("Concat", "axis1", _normal((2, 1, 2), (2, 2, 2), (2, 1, 2)),
              lambda b, layer: [np.concatenate(b, 1)],
              bad_bottom_counts=[0], bad_top_counts=[2]),
    LayerCase("Concat", "legacy_concat_dim0", _normal((1, 3, 2), (2, 3, 2)),
              lambda b, layer: [np.concatenate(b, 0)], param="concat_param { concat_dim: 0 }"),
    LayerCase("Concat", "negative_axis", _normal((2, 3, 1), (2, 3, 4)),
              lambda b, layer: [np.concatenate(b, -1)], param="concat_param { axis: -1 }"),
    LayerCase("Concat", "one_bottom", _normal((2, 3)), lambda b, layer: [b[0]]),
    # ------------------------------------------------------------ Slice
    LayerCase("Slice", "points_axis1", _normal((2, 5, 2)),
              lambda b, layer: np.split(b[0], [1, 3], 1),
              param="slice_param { axis: 1 slice_point: 1 slice_point: 3 }", num_tops=3,
              bad_bottom_counts=[0, 2], bad_top_counts=[0]),
    LayerCase("Slice", "legacy_slice_dim0_equal", _normal((4, 3)),
              lambda b, layer: np.split(b[0], 2, 0), param="slice_param { slice_dim: 0 }",
              num_tops=2),
    LayerCase("Slice", "negative_axis_equal", _normal((2, 1, 6)),
              lambda b, layer: np.split(b[0], 3, -1), param="slice_param { axis: -1 }",
              num_tops=3),
    LayerCase("Slice", "default_axis_points", _normal((2, 4)),
              lambda b, layer: np.split(b[0], [3], 1), param="slice_param { slice_point: 3 }",
              num_tops=2),
    LayerCase("Slice", "one_top", _normal((2, 3)), lambda b, layer: [b[0]]),
    # ------------------------------------------------------------ Eltwise
    LayerCase("Eltwise", "sum_default", _normal((2, 3, 4), (2, 3, 4)),
              lambda b, layer: [b[0] + b[1]], bad_bottom_counts=[1], bad_top_counts=[2]),
    LayerCase("Eltwise", "sum_coeff", _normal((2, 3), (2, 3), (2, 3)),
              lambda b, layer: [b[0] - 0.5 * b[1] + 2 * b[2]],
              param="eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }"),
    LayerCase("Eltwise", "prod_stable", _normal((2, 3, 2), (2, 3, 2), (2, 3, 2)),
              lambda b, layer: [b[0] * b[1] * b[2]], param="eltwise_param { operation: PROD }"),
    LayerCase("Eltwise", "prod_unstable",
              lambda rng: [rng.uniform(0.5, 1.5, (2, 3)) * rng.choice([-1, 1], (2, 3))
                           for _ in range(3)],
              lambda b, layer: [b[0] * b[1] * b[2]],
              param="eltwise_param { operation: PROD stable_prod_grad: false }"),
    LayerCase("Eltwise", "max_three", _distinct((2, 3, 2), (2, 3, 2), (2, 3, 2)),
              lambda b, layer: [np.maximum(np.maximum(b[0], b[1]), b[2])],
              param="eltwise_param { operation: MAX }", stepsize=1e-4, threshold=1e-2),
    LayerCase("Eltwise", "max_tie_goes_to_bottom1", _tie_bottoms,
              lambda b, layer: [b[0]], param="eltwise_param { operation: MAX }", grad="none",
              check=_max_tie_check),
    # ------------------------------------------------------------ Filter
    LayerCase("Filter", "one_bottom", _with_fixed(_normal((4, 3, 2)), [1, 0, 1, 1]),
              lambda b, layer: [b[0][[0, 2, 3]]], check_bottoms=[0],
              check=_filter_setup_shape, bad_bottom_counts=[1], bad_top_counts=[2]),
    LayerCase("Filter", "two_bottoms_column_selector",
              _with_fixed(_normal((5, 2), (5, 3, 2)), [[0], [2], [0], [0], [-1]]),
              lambda b, layer: [b[0][[1, 4]], b[1][[1, 4]]], num_tops=2, check_bottoms=[0, 1]),
    # ------------------------------------------------------------ Parameter
    LayerCase("Parameter", "shape2x3", lambda rng: [],
              lambda b, layer: [layer.blobs[0].data],
              param="parameter_param { shape { dim: 2 dim: 3 } }",
              check=lambda layer, b, t: _shares_param(layer, t),
              bad_bottom_counts=[1], bad_top_counts=[0, 2]),
    LayerCase("Parameter", "shape3d", lambda rng: [], lambda b, layer: [np.zeros((2, 1, 3))],
              param="parameter_param { shape { dim: 2 dim: 1 dim: 3 } }"),
    # ------------------------------------------------------------ Reduction
    LayerCase("Reduction", "sum_all", _normal((2, 3, 4)), lambda b, layer: [np.array(b[0].sum())],
              bad_bottom_counts=[0, 2], bad_top_counts=[2]),
    LayerCase("Reduction", "asum_axis1_coeff", _normal((2, 3, 4)),
              lambda b, layer: [2 * np.abs(b[0]).sum((1, 2))],
              param="reduction_param { operation: ASUM axis: 1 coeff: 2 }", threshold=2e-3,
              kink_range=0.02),
    LayerCase("Reduction", "sumsq_negative_axis", _normal((2, 3, 4)),
              lambda b, layer: [-0.5 * (b[0] ** 2).sum(2)],
              param="reduction_param { operation: SUMSQ axis: -1 coeff: -0.5 }"),
    LayerCase("Reduction", "mean_axis2_coeff", _normal((2, 3, 4, 2)),
              lambda b, layer: [3 * b[0].mean((2, 3))],
              param="reduction_param { operation: MEAN axis: 2 coeff: 3 }"),
    # ------------------------------------------------------------ Silence
    LayerCase("Silence", "two_bottoms", _normal((2, 3), (4,)), lambda b, layer: [], num_tops=0,
              check=lambda layer, b, t: _silence_zero_diffs(layer, b),
              bad_bottom_counts=[0], bad_top_counts=[1]),
    # ------------------------------------------------------------ ArgMax
    _argmax_row("top1", (3, 10), "", bad_bottom_counts=[2], bad_top_counts=[2]),
    _argmax_row("top3_out_max_val", (3, 10), "top_k: 3 out_max_val: true", 3, True),
    _argmax_row("axis1_top2", (2, 4, 3), "axis: 1 top_k: 2", 2, axis=1),
    _argmax_row("negative_axis_values", (2, 3, 5), "axis: -1 top_k: 2 out_max_val: true", 2,
                True, axis=2),
    _argmax_row("four_d_top2", (2, 2, 2, 3), "top_k: 2", 2),
    _argmax_row("ties_larger_index_first", (4, 6), "top_k: 4 out_max_val: true", 4, True,
                make=lambda rng: [rng.integers(0, 3, (4, 6)).astype(np.float64)]),
    # ------------------------------------------------------------ Tile
    LayerCase("Tile", "axis1", _normal((2, 2, 2)), lambda b, layer: [np.tile(b[0], (1, 3, 1))],
              param="tile_param { axis: 1 tiles: 3 }", bad_bottom_counts=[0, 2],
              bad_top_counts=[2]),
    LayerCase("Tile", "negative_axis", _normal((2, 3)), lambda b, layer: [np.tile(b[0], (1, 2))],
              param="tile_param { axis: -1 tiles: 2 }"),
    LayerCase("Tile", "axis0", _normal((2, 3)), lambda b, layer: [np.tile(b[0], (2, 1))],
              param="tile_param { axis: 0 tiles: 2 }"),
    # ------------------------------------------------------------ Embed
    LayerCase("Embed", "bias", lambda rng: [np.array([[1, 3, 3], [4, 1, 0]], float)],
              _embed_ref, param=_EMBED.format(bias=""), check_bottoms=[],
              bad_bottom_counts=[0, 2], bad_top_counts=[2]),
    LayerCase("Embed", "no_bias_1d", lambda rng: [np.array([4.0, 4.0, 0.0, 2.0])],
              _embed_ref, param=_EMBED.format(bias="bias_term: false"), check_bottoms=[]),
    # ------------------------------------------------------------ Crop
    LayerCase("Crop", "axis2_offsets", _normal((1, 1, 4, 5), (1, 1, 2, 3)),
              lambda b, layer: _crop(b[0], b[1], 2, [1, 2]),
              param="crop_param { axis: 2 offset: 1 offset: 2 }", check_bottoms=[0],
              bad_bottom_counts=[1, 3], bad_top_counts=[2]),
    LayerCase("Crop", "axis1_one_offset", _normal((2, 4, 5), (2, 2, 3)),
              lambda b, layer: _crop(b[0], b[1], 1, [1, 1]),
              param="crop_param { axis: 1 offset: 1 }", check_bottoms=[0]),
    LayerCase("Crop", "negative_axis_no_offset", _normal((2, 3, 5), (1, 1, 2)),
              lambda b, layer: _crop(b[0], b[1], 2, [0]), param="crop_param { axis: -1 }",
              check_bottoms=[0]),
    LayerCase("Crop", "axis0_offsets", _normal((3, 4), (2, 2)),
              lambda b, layer: _crop(b[0], b[1], 0, [1, 2]),
              param="crop_param { axis: 0 offset: 1 offset: 2 }", check_bottoms=[0]),
]

# Caffe's own tests check these types exhaustively (Eltwise element by element); the rest use
# the full check. Filter too is exhaustive in Caffe, but its top shrinks at the first forward,
# after the exhaustive checker has counted the top elements at set-up: it gets the full check.
_CAFFE_GRAD_MODE = {"Flatten": "exhaustive", "BatchReindex": "exhaustive", "Concat": "exhaustive",
                    "Slice": "exhaustive", "Reduction": "exhaustive",
                    "Tile": "exhaustive", "Embed": "exhaustive", "Crop": "exhaustive",
                    "Eltwise": "eltwise"}
for _row in ROWS:
    if _row.grad == "full":
        _row.grad = _CAFFE_GRAD_MODE.get(_row.type, "full")

