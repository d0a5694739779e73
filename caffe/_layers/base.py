"""Shared bases for layer families: NeuronLayer (elementwise, top shaped like bottom) and
LossLayer (prediction + label -> scalar loss), and ``refuse_backward`` for the bottoms no
gradient reaches (labels, sequence indicators)."""

from __future__ import annotations

from collections.abc import Sequence

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layer import Layer
from caffe.proto import caffe_pb2


def refuse_backward(layer, propagate_down: Sequence[bool], names: dict[int, str]) -> None:
    """Raise, as Caffe does, when asked to backpropagate into inputs without a gradient
    (labels, the infogain matrix, sequence continuation indicators). ``names`` maps bottom
    index -> what that bottom is."""
    for i, what in names.items():
        if i < len(propagate_down) and propagate_down[i]:
            raise LayerSetupError(
                f"Layer '{layer.name}' ({layer.type}) cannot backpropagate to its {what} input "
                f"(bottom {i}); set propagate_down: false for that bottom, or do not feed it "
                "from a layer that needs a gradient")


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; may run in place (top is bottom)."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    allows_in_place = True

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)


class LossLayer(Layer):
    """Two bottoms (prediction, label); a scalar top weighted 1 by default. Force-backward
    never reaches the label (bottom 1)."""

    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1
    auto_top_blobs = True
    is_loss = True
    no_force_backward_bottoms = (1,)

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        if not bottom[0].shape:
            raise LayerSetupError(
                f"Layer '{self.name}' ({self.type}): the prediction (bottom 0) is a 0-D blob; "
                "a loss needs at least one axis (the batch)")
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise LayerSetupError(
                f"Layer '{self.name}' ({self.type}): the prediction and the label must have the "
                f"same first (batch) dimension; got shapes {bottom[0].shape} and "
                f"{bottom[1].shape}")
        top[0].reshape(())


def normalizer(mode: int, outer_num: int, inner_num: int, valid_count: float) -> float:
    """Caffe's LossLayer normalizer for a LossParameter.NormalizationMode (never below 1)."""
    lp = caffe_pb2.LossParameter
    if mode == lp.FULL:
        value = float(outer_num * inner_num)
    elif mode == lp.VALID:
        value = float(outer_num * inner_num) if valid_count < 0 else float(valid_count)
    elif mode == lp.BATCH_SIZE:
        value = float(outer_num)
    elif mode == lp.NONE:
        value = 1.0
    else:
        raise LayerSetupError(f"unknown loss normalization mode {mode}")
    return max(1.0, value)


def normalization_mode(layer_param: caffe_pb2.LayerParameter) -> int:
    """The effective normalization: ``normalization`` if set, else the legacy ``normalize``
    flag (VALID when true, BATCH_SIZE when false), else VALID."""
    lp = layer_param.loss_param
    if not lp.HasField("normalization") and lp.HasField("normalize"):
        return caffe_pb2.LossParameter.VALID if lp.normalize else caffe_pb2.LossParameter.BATCH_SIZE
    return lp.normalization
