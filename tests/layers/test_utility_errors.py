"""Bad parameters and bad bottoms of the utility layers raise LayerSetupError naming the layer,
the parameter, the value received and what is allowed."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.net import create_layer
from caffe.proto import caffe_pb2
from caffe.testing import make_blobs


def _run(type_name: str, param: str, *arrays, num_tops: int = 1, bottoms=None):
    """Set up and forward a layer named 'L' with bottoms from ``arrays``."""
    lp = caffe_pb2.LayerParameter(name="L", type=type_name)
    text_format.Merge(param, lp)
    lp.bottom.extend(bottoms or [f"b{i}" for i in range(len(arrays))])
    lp.top.extend(f"t{i}" for i in range(num_tops))
    layer = create_layer(lp, caffe.TRAIN)
    bottom = make_blobs(*[np.asarray(a, dtype=np.float64) for a in arrays])
    top = [Blob() for _ in range(num_tops)]
    layer.SetUp(bottom, top)
    layer.Forward(bottom, top)
    return layer, top


@contextlib.contextmanager
def _raises(*fragments: str):
    """Expect a LayerSetupError whose message holds "Layer 'L'" and every fragment."""
    with pytest.raises(LayerSetupError) as info:
        yield
    message = str(info.value)
    for fragment in ("Layer 'L'",) + fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---------------------------------------------------------------- Slice
def test_slice_point_beyond_the_axis():
    with _raises("(Slice)", "slice_param.slice_point", "[2, 7]", "size 5", "between 1 and 5"):
        _run("Slice", "slice_param { axis: 1 slice_point: 2 slice_point: 7 }",
             np.zeros((2, 5)), num_tops=3)


def test_slice_points_unsorted():
    with _raises("slice_param.slice_point", "[3, 1]", "strictly increasing"):
        _run("Slice", "slice_param { slice_point: 3 slice_point: 1 }", np.zeros((2, 5)),
             num_tops=3)


def test_slice_points_zero_or_repeated():
    for points in ("slice_point: 0 slice_point: 2", "slice_point: 2 slice_point: 2"):
        with _raises("slice_param.slice_point", "strictly increasing"):
            _run("Slice", f"slice_param {{ {points} }}", np.zeros((2, 5)), num_tops=3)


def test_slice_point_count_must_match_tops():
    with _raises("slice_param.slice_point", "[2]", "3 tops", "2 strictly increasing"):
        _run("Slice", "slice_param { slice_point: 2 }", np.zeros((2, 5)), num_tops=3)


def test_slice_equal_split_must_divide():
    with _raises("(Slice)", "slice_param.slice_point", "size 5", "evenly into 2 tops"):
        _run("Slice", "", np.zeros((2, 5)), num_tops=2)


def test_slice_axis_and_legacy_dim_together():
    with _raises("slice_param", "axis (1)", "slice_dim (0)", "only one"):
        _run("Slice", "slice_param { axis: 1 slice_dim: 0 }", np.zeros((2, 4)), num_tops=2)


def test_slice_axis_out_of_range():
    with _raises("slice_param.axis 2", "(2, 4)", "-2 to 1"):
        _run("Slice", "slice_param { axis: 2 }", np.zeros((2, 4)), num_tops=2)


# ---------------------------------------------------------------- Concat
def test_concat_shape_mismatch_names_the_bottoms():
    with _raises("(Concat)", "bottom 'second'", "(2, 4, 5)", "bottom 'first'", "(2, 3, 4)",
                 "except along the concat axis 1"):
        _run("Concat", "", np.zeros((2, 3, 4)), np.zeros((2, 4, 5)),
             bottoms=["first", "second"])


def test_concat_axis_count_mismatch():
    with _raises("bottom 'b1'", "(2, 3, 1)", "same number of axes"):
        _run("Concat", "", np.zeros((2, 3)), np.zeros((2, 3, 1)))


def test_concat_legacy_dim_out_of_range():
    with _raises("concat_param.concat_dim 3", "0 to 1"):
        _run("Concat", "concat_param { concat_dim: 3 }", np.zeros((2, 3)), np.zeros((2, 3)))


def test_concat_axis_and_legacy_dim_together():
    with _raises("concat_param", "concat_dim", "only one"):
        _run("Concat", "concat_param { axis: 0 concat_dim: 0 }", np.zeros((2, 3)),
             np.zeros((2, 3)))


# ---------------------------------------------------------------- Eltwise
def test_eltwise_shape_mismatch_names_the_bottoms():
    with _raises("(Eltwise)", "bottom 'y'", "(2, 4)", "bottom 'x'", "(2, 3)", "same shape"):
        _run("Eltwise", "", np.zeros((2, 3)), np.zeros((2, 4)), bottoms=["x", "y"])


def test_eltwise_coeff_count():
    with _raises("eltwise_param.coeff", "3 values", "2 bottoms", "one coefficient per bottom"):
        _run("Eltwise", "eltwise_param { coeff: 1 coeff: 2 coeff: 3 }", np.zeros(2),
             np.zeros(2))


def test_eltwise_coeff_only_for_sum():
    with _raises("eltwise_param.coeff", "only allowed with operation SUM", "PROD"):
        _run("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }", np.zeros(2),
             np.zeros(2))


# ---------------------------------------------------------------- Embed
_EMBED = "embed_param { input_dim: 5 num_output: 2 }"


@pytest.mark.parametrize("bad", [5.0, -1.0, 12.0])
def test_embed_index_out_of_range(bad):
    with _raises("(Embed)", f"index {bad:g}", "bottom 'b0'", "allowed: 0 to 4",
                 "embed_param.input_dim 5"):
        _run("Embed", _EMBED, np.array([0.0, 4.0, bad]))


def test_embed_sizes_must_be_positive():
    with _raises("embed_param.input_dim must be positive, got 0"):
        _run("Embed", "embed_param { num_output: 2 }", np.zeros(3))


def test_batch_reindex_index_out_of_range():
    with _raises("(BatchReindex)", "index 3", "bottom 'b1'", "allowed: 0 to 2"):
        _run("BatchReindex", "", np.zeros((3, 2)), np.array([0.0, 3.0]))


# ---------------------------------------------------------------- Reshape
def test_reshape_two_minus_ones():
    with _raises("(Reshape)", "reshape_param.shape [-1, 2, -1]", "2 dims of -1",
                 "at most one -1"):
        _run("Reshape", "reshape_param { shape { dim: -1 dim: 2 dim: -1 } }", np.zeros((4, 6)))


def test_reshape_incompatible_count():
    with _raises("(Reshape)", "reshape_param.shape [5, 5]", "25 elements", "(4, 6)", "has 24",
                 "counts must match"):
        _run("Reshape", "reshape_param { shape { dim: 5 dim: 5 } }", np.zeros((4, 6)))


def test_reshape_inferred_dim_not_divisible():
    with _raises("reshape_param.shape [5, -1]", "24 elements", "not divisible", "(5)"):
        _run("Reshape", "reshape_param { shape { dim: 5 dim: -1 } }", np.zeros((4, 6)))


def test_reshape_zero_without_bottom_axis():
    with _raises("reshape_param.shape [24, 0]", "no axis 1 to copy"):
        _run("Reshape", "reshape_param { shape { dim: 24 dim: 0 } }", np.zeros(24))


def test_reshape_axis_out_of_range():
    with _raises("reshape_param.axis 3", "-3 to 2"):
        _run("Reshape", "reshape_param { shape { dim: 1 } axis: 3 num_axes: 0 }",
             np.zeros((4, 6)))


def test_reshape_and_flatten_refuse_in_place():
    for type_name in ("Reshape", "Flatten"):
        lp = caffe_pb2.LayerParameter(name="L", type=type_name, bottom=["x"], top=["x"])
        layer = create_layer(lp, caffe.TRAIN)
        blob = make_blobs(np.zeros((2, 3)))[0]
        with _raises(f"({type_name})", "in-place"):
            layer.SetUp([blob], [blob])


# ---------------------------------------------------------------- others
def test_flatten_end_axis_before_axis():
    with _raises("flatten_param.end_axis 0", "flatten_param.axis 2", "at least axis - 1"):
        _run("Flatten", "flatten_param { axis: 2 end_axis: 0 }", np.zeros((2, 3, 4)))


def test_crop_out_of_bounds():
    with _raises("(Crop)", "crop_param.offset 3", "size 3", "exceeds 5"):
        _run("Crop", "crop_param { axis: 1 offset: 3 }", np.zeros((2, 5)), np.zeros((2, 3)))


def test_crop_offset_count():
    with _raises("crop_param.offset [1, 1, 1]", "2 axes to crop"):
        _run("Crop", "crop_param { offset: 1 offset: 1 offset: 1 }", np.zeros((1, 1, 5, 5)),
             np.zeros((1, 1, 2, 2)))


def test_tile_needs_positive_tiles():
    with _raises("tile_param.tiles", "positive", "nothing"):
        _run("Tile", "", np.zeros((2, 3)))


def test_argmax_top_k_too_large():
    with _raises("argmax_param.top_k 7", "allowed: 1 to the size of axis 1, 6"):
        _run("ArgMax", "argmax_param { top_k: 7 axis: 1 }", np.zeros((2, 6)))


def test_filter_selector_shape():
    with _raises("(Filter)", "selector 'b1'", "(3, 2)", "one value per item"):
        _run("Filter", "", np.zeros((3, 2)), np.zeros((3, 2)))


def test_filter_items_must_match_selector():
    with _raises("bottom 'b0'", "(4, 2)", "selector 'b1', which has 3"):
        _run("Filter", "", np.zeros((4, 2)), np.ones(3))
