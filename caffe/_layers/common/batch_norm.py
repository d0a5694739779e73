"""BatchNorm: top = (bottom - mean) / sqrt(var + eps) per channel (axis 1), without scale or
shift (a Scale layer follows in Caffe nets).

With batch statistics (TRAIN unless ``use_global_stats``), mean and biased var are taken over
N and the spatial axes, and forward updates the three blobs: mean_sum = mean + f * mean_sum,
var_sum = m / (m - 1) * var + f * var_sum (m = values per channel; factor 1 when m = 1),
factor = f * factor + 1, with f = moving_average_fraction. With global statistics (TEST by
default) mean = mean_sum / factor and var = var_sum / factor (0 when factor is 0).

bottom and top: (N, C, ...) or (N,); blobs: mean_sum (C,), var_sum (C,), factor (1,). The blobs
get no gradient. In place, global statistics are applied in the blob's memory; batch statistics
give the blob a new tensor and keep the old one (the input) for backward, one buffer as Caffe's
x_norm. The net may fold the per-channel Scale that follows in place into this layer
(``fold_scale``): y = xhat * s + b in one pass, and in training one backward for both."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe._common import recorded
from caffe._layers.neuron._operand import affine_
from caffe.errors import LayerSetupError
from caffe.layer import PASS, Layer, Phase
from caffe.registry import register_layer

_bn_backward = torch.ops.aten.native_batch_norm_backward


@register_layer("BatchNorm")
class BatchNorm(Layer):
    replaces_tops = True
    replaces_bottom_diffs = True
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    allows_in_place = True

    def setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        where = f"Layer '{self.name}' (BatchNorm)"
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.use_global_stats = (bool(p.use_global_stats) if p.HasField("use_global_stats")
                                 else self.phase == Phase.TEST)
        self.eps = float(p.eps)
        if not self.eps >= 0:  # NaN too
            raise LayerSetupError(f"{where}: batch_norm_param.eps must be >= 0, got {self.eps:g}")
        shape = bottom[0].shape
        if not shape:
            raise LayerSetupError(f"{where}: the input needs at least one axis, got a scalar")
        self.channels = shape[1] if len(shape) > 1 else 1
        # Caffe masks the statistics from the solver: missing param specs get lr_mult 0,
        # given ones must say 0
        specs = self.layer_param.param
        for i in range(3):
            if i == len(specs):
                specs.add(lr_mult=0.0)
            elif specs[i].lr_mult != 0:
                raise LayerSetupError(
                    f"{where}: param {i} has lr_mult {specs[i].lr_mult}; the batch statistics "
                    "cannot be learned parameters: set lr_mult: 0 or leave the param out")
        if not self.blobs:
            for shp in ((self.channels,), (self.channels,), (1,)):
                self.blobs.add_blob(*shp)
        self._stats_key: tuple = ()
        self._stats: tuple[torch.Tensor, ...] = ()
        self._fold: Layer | None = None
        self._fold_index = -1
        #: whether the last forward applied the folded Scale (``fold_scale``)
        self.applied_scale = False

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if (shape[1] if len(shape) > 1 else 1) != self.channels:
            raise LayerSetupError(f"Layer '{self.name}' (BatchNorm): input shape {shape} has "
                                  f"{shape[1]} channels, the layer was set up for "
                                  f"{self.channels}")
        if top[0] is not bottom[0]:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].tensor
        x3 = x.reshape(x.shape[0], self.channels, -1)
        self.applied_scale = (self._fold is not None
                              and PASS.fold_from <= self._fold_index < PASS.fold_to)
        if self.use_global_stats:
            if top[0] is not bottom[0] or (self.applied_scale and self._need_backward):
                # batch_norm takes the Scale's terms itself: only the statistics are derived
                # (and stay cached while the solver changes the Scale's s and b)
                mean, var, self.invstd, _, _ = self._global_stats(x.dtype, False)
                w, b = self._scale_terms()
                y = F.batch_norm(x3, mean, var, w, b, False, 0.0, self.eps)
                if top[0] is bottom[0]:  # the pair's backward needs the input: keep it
                    self.x3, self.mean, self.var = x3, mean, var
                    top[0].swap_tensor(y.view(x.shape))
                    return
            else:  # x * mul + add: invstd and -mean invstd, times s (plus b) when folded
                _, _, self.invstd, mul, add = self._global_stats(x.dtype, self.applied_scale)
                shape = (1, self.channels, 1)
                affine_(x3, mul.view(shape), add.view(shape))
                if x3._is_view():  # the affine went into x itself
                    return
                y = x3
        else:
            self.x3 = x3
            y = self._batch_forward(x3, *self._scale_terms())
            if top[0] is bottom[0]:  # x3 (the old memory) is kept for the backward
                top[0].swap_tensor(y.view(x.shape))
                return
        top[0].tensor = y.view(x.shape)

    def _scale_terms(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The folded Scale's s and b (None for b without a bias term) as affine terms when
        this pass applies it, else (None, None)."""
        if not self.applied_scale:
            return None, None
        w, *rest = (p.tensor for p in self._fold.blobs)
        return w, (rest[0] if rest else None)

    def fold_scale(self, scale: Layer, index: int) -> None:
        """Apply ``scale`` (the per-channel, single-bottom Scale right after this layer, at
        net index ``index + 1``, in place on this layer's top) within this layer's forward
        and backward during whole passes (``caffe.layer.PASS``); the Scale then does nothing.
        With batch statistics the pair becomes PyTorch's affine batch norm: one pass each way,
        and no copy of the Scale's input."""
        p = scale.layer_param.scale_param
        per_channel = [(self.channels,)] * len(scale.blobs)
        if p.axis == 1 and p.num_axes == 1 and [b.shape for b in scale.blobs] == per_channel:
            self._fold, self._fold_index = scale, index
            scale.folded_at, scale.folded_into = index, self

    def normalized(self) -> torch.Tensor:
        """(x - mean) * invstd of the last forward that kept its input, (N, C, M): the input of
        a folded Scale, for a backward that runs the Scale on its own."""
        return (self.x3 - self.mean.view(1, -1, 1)) * self.invstd.view(1, -1, 1)

    def _global_stats(self, dtype: torch.dtype, folded: bool) -> tuple[torch.Tensor, ...]:
        """(mean, var, invstd = 1/sqrt(var + eps), mul, add) from the stored sums, where
        x * mul + add normalizes x (mul = invstd, add = -mean invstd; times the folded Scale's
        s, plus its b). They are kept until a blob may have changed (``Blob.data_version``), so
        a TEST pass derives them once, not eight small operations per BatchNorm per pass; and
        recomputed inside a captured CUDA graph, whose replays must derive them from the blobs'
        values then, as nothing in Python runs (and inside a trace for export, whose program must
        derive them likewise)."""
        blobs = list(self.blobs) + (list(self._fold.blobs) if folded else [])
        key = () if recorded(blobs[0]._t) else (
            tuple([b.data_version() for b in blobs]) + (dtype, folded))
        if not key or None in key or key != self._stats_key:
            mean_sum, var_sum, factor = (b.tensor.reshape(-1).to(dtype) for b in self.blobs)
            inv = torch.where(factor == 0, torch.zeros_like(factor), 1.0 / factor)
            mean, var = mean_sum * inv, var_sum * inv
            invstd = var.add(self.eps).rsqrt_()
            mul, add = invstd, -mean * invstd
            if folded:
                s, *b = (blob.tensor.to(dtype) for blob in self._fold.blobs)
                mul, add = invstd * s, torch.addcmul(b[0], add, s) if b else add * s
            self._stats = (mean, var, invstd, mul, add)
            self._stats_key = key
        return self._stats

    def _batch_forward(self, x3: torch.Tensor, w: torch.Tensor | None,
                       b: torch.Tensor | None) -> torch.Tensor:
        """Normalise with batch statistics (then times w plus b, a folded Scale's terms) and
        fold the statistics into the running sums."""
        c = self.channels
        m = x3.numel() // c
        f = self.moving_average_fraction
        sums = [blob.tensor.view(-1) for blob in self.blobs]
        if m > 1 and f != -1 and sums[0].dtype == x3.dtype:
            # PyTorch's running update r = (1 - k) r + k batch (var: the m/(m-1) one), with
            # k = 1/(1 + f), is (f sums + batch) / (1 + f): one scaling gives Caffe's sums,
            # and a second kernel the factor f * factor + 1
            y, self.mean, self.invstd = torch.native_batch_norm(
                x3, w, b, sums[0], sums[1], True, 1.0 / (1.0 + f), self.eps)
            torch._foreach_mul_(sums, [1.0 + f, 1.0 + f, f])
            sums[2].add_(1.0)
            return y
        mean = torch.zeros(c, dtype=x3.dtype, device=x3.device)
        unbiased = torch.zeros_like(mean)
        if m > 1:
            # momentum 1 on zero buffers returns the batch mean and the m/(m-1) variance
            y, self.mean, self.invstd = torch.native_batch_norm(
                x3, w, b, mean, unbiased, True, 1.0, self.eps)
        else:  # one value per channel: it is its own mean, and normalizes to 0 (then b)
            mean = x3.reshape(c)
            y = torch.zeros_like(x3) if b is None else b.view(1, c, 1).expand_as(x3).clone()
            self.mean = mean
            self.invstd = torch.full_like(mean, self.eps).rsqrt_()
        # sums = f * sums + batch (factor: f * factor + 1): three kernels for the three blobs
        torch._foreach_mul_(sums, f)
        torch._foreach_add_(sums[:2], [mean.to(sums[0].dtype), unbiased.to(sums[1].dtype)])
        sums[2].add_(1.0)
        return y

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff_tensor
        dy = dy.reshape(dy.shape[0], self.channels, -1)
        if self.applied_scale and PASS.fold_from <= self._fold_index < PASS.fold_to:
            self._folded_backward(dy, propagate_down[0], bottom[0])
            return
        if not propagate_down[0]:
            return
        if self.use_global_stats:
            dx = dy * self.invstd.view(1, -1, 1)
        else:
            dx = _bn_backward(dy, self.x3, None, None, None, self.mean, self.invstd, True,
                              self.eps, [True, False, False])[0]
        bottom[0].diff_tensor = dx.view(bottom[0].shape)

    def _folded_backward(self, dy: torch.Tensor, want_x: bool, bottom) -> None:
        """The backward of the pair (this layer then its folded Scale) from the Scale's top
        diff: one affine batch-norm backward gives dx and the Scale's ds and db."""
        sc = self._fold
        w, _ = self._scale_terms()
        want_s = sc._param_propagate_down[0]
        want_b = sc.bias_term and sc._param_propagate_down[1]
        if self.use_global_stats:  # running statistics: the eval-mode backward
            stats = (self.mean, self.var, None, None, False)
        else:
            stats = (None, None, self.mean, self.invstd, True)
        dx, ds, db = _bn_backward(dy, self.x3, w, *stats, self.eps, [want_x, want_s, want_b])
        if want_s:
            sc.add_scale_diff(ds)
        if want_b:
            sc.blobs[1].diff_tensor.add_(db)
        if want_x:
            bottom.diff_tensor = dx.view(bottom.shape)
