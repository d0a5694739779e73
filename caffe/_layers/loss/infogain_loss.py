"""InfogainLoss: softmax followed by a multinomial logistic loss weighted by an "information
gain" matrix H (K x K): with H = I it is SoftmaxWithLoss.

bottom[0]: scores (outer, K, inner...) with K at ``infogain_loss_param.axis``; bottom[1]: labels
(outer * inner values in [0, K)); optional bottom[2]: H (K * K values). Without bottom[2], H is
read from the binaryproto file ``infogain_loss_param.source``. p = softmax(x) over the axis;
loss = -sum_valid sum_k H[label, k] * log(max(p_k, 1e-20)) / normalizer
(``loss_param.normalization``, default VALID; the legacy ``normalize`` is rejected, as in Caffe).
Labels equal to ``loss_param.ignore_label`` contribute nothing. Backward:
dx_k = (p_k * sum_j H[label, j] - H[label, k]) * loss_weight / normalizer, zero at ignored
positions. No backward into the labels or H. Optional top[1]: the probabilities.
The rows H[label] gathered by the forward are kept for the backward. Labels are range-checked
as in SoftmaxWithLoss (on the CPU; elsewhere only with CAFFE_CHECK_LABELS=1)."""

from __future__ import annotations

import torch

from caffe._layers.base import LossLayer, refuse_backward
from caffe._layers.loss.labels import (
    LOG_THRESHOLD,
    check_label_range,
    class_layout,
    int_labels,
    labels_checked_on,
    valid_labels,
    valid_normalizer,
)
from caffe.errors import FileFormatError, LayerSetupError
from caffe.model_io import blobproto_to_array
from caffe.proto import caffe_pb2, files
from caffe.registry import register_layer


@register_layer("InfogainLoss")
class InfogainLoss(LossLayer):
    exact_num_bottom_blobs = None
    min_bottom_blobs = 2
    max_bottom_blobs = 3
    exact_num_top_blobs = None
    min_top_blobs = 1
    max_top_blobs = 2

    def batch_axis_of(self, i: int) -> int | None:
        """The infogain matrix (bottom 2) is C x C whatever the batch."""
        return None if i == 2 else 0

    def setup(self, bottom, top):
        lp = self.layer_param.loss_param
        if lp.HasField("normalize"):
            raise LayerSetupError(
                f"Layer '{self.name}' (InfogainLoss): loss_param.normalize is deprecated and "
                "not accepted by this layer; use loss_param.normalization (FULL, VALID, "
                "BATCH_SIZE or NONE)")
        self.mode = lp.normalization
        self.ignore_label = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        self.infogain = None if len(bottom) > 2 else self._load_infogain()

    def _load_infogain(self) -> torch.Tensor:
        p = self.layer_param.infogain_loss_param
        if not p.HasField("source"):
            raise LayerSetupError(
                f"Layer '{self.name}' (InfogainLoss): the infogain matrix H must be given, "
                "either as a third bottom or as a binaryproto file in "
                "infogain_loss_param.source")
        try:
            proto = files.read_binary(p.source, caffe_pb2.BlobProto())
            array = blobproto_to_array(proto, p.source)
        except FileFormatError as e:
            raise FileFormatError(
                f"Layer '{self.name}' (InfogainLoss): cannot load the infogain matrix from "
                f"infogain_loss_param.source '{p.source}': {e}") from e
        return torch.from_numpy(array.copy())

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.axis, self.outer, self.num_labels, self.inner, self.view, _ = class_layout(
            self, bottom[0], bottom[1], self.layer_param.infogain_loss_param.axis,
            "infogain axis")
        h_count = bottom[2].count if len(bottom) > 2 else self.infogain.numel()
        if h_count != self.num_labels ** 2:
            where = "bottom 2" if len(bottom) > 2 else repr(
                self.layer_param.infogain_loss_param.source)
            raise LayerSetupError(
                f"Layer '{self.name}' (InfogainLoss): the infogain matrix ({where}) must be "
                f"{self.num_labels}x{self.num_labels} ({self.num_labels ** 2} values) for "
                f"{self.num_labels} classes; it has {h_count} values")
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _matrix(self, bottom, like: torch.Tensor) -> torch.Tensor:
        """H as (K, K) on ``like``'s device and dtype (a file's H is converted once)."""
        if len(bottom) > 2:
            h = bottom[2].tensor.to(like.dtype)
        else:
            # lossless: the file holds float32 values
            self.infogain = h = self.infogain.to(device=like.device, dtype=like.dtype)
        return h.reshape(self.num_labels, self.num_labels)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        prob = torch.softmax(x.reshape(self.view), dim=1)
        if prob.dim() == 2:
            prob = prob.unsqueeze(2)  # (outer, K, 1): a view
        labels = int_labels(bottom[1].tensor).reshape(self.outer, self.inner)
        if labels_checked_on(labels.device):
            check_label_range(self, labels, self.num_labels, self.ignore_label)
        valid, safe = valid_labels(labels, self.ignore_label)
        h = self._matrix(bottom, x)
        rows = h[safe].permute(0, 2, 1)  # (outer, K, inner): H[label, k] at each position
        per_item = (rows * torch.log(prob.clamp_min(LOG_THRESHOLD))).sum(1)
        if valid is not None:
            per_item = torch.where(valid, per_item, torch.zeros_like(per_item))
        self.norm = valid_normalizer(self.mode, self.outer, self.inner, valid, x.dtype)
        self.prob, self.rows, self.valid = prob, rows, valid
        top[0].tensor.fill_(per_item.sum().neg_() / self.norm)
        if len(top) > 1:
            top[1].tensor = prob.view(x.shape)

    def backward(self, top, propagate_down, bottom):
        refuse_backward(self, propagate_down, {1: "label", 2: "infogain matrix"})
        if not propagate_down[0]:
            return
        rows = self.rows
        dx = (self.prob * rows.sum(1, keepdim=True)).sub_(rows)
        scale = top[0].diff_tensor / self.norm
        dx.mul_(scale if self.valid is None else self.valid.unsqueeze(1) * scale)
        bottom[0].diff_tensor = dx.view(bottom[0].shape)
