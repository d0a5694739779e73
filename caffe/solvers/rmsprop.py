"""RMSProp (Caffe's RMSPropSolver): rates from a running mean of squared gradients.

With decay d = ``rms_decay``: ``H = d * H + (1 - d) * g^2``; the update is
``r * g / (sqrt(H) + delta)``. Momentum is not allowed; 0 <= rms_decay < 1.
"""

from __future__ import annotations

import torch

from caffe.solvers.adagrad import scale_by_rms
from caffe.solvers.sgd import SGDSolver, f32
from caffe.solvers.solver import register_solver


@register_solver("RMSProp")
class RMSPropSolver(SGDSolver):
    """RMSProp: AdaGrad with an exponentially decaying sum."""

    def _check_param(self) -> None:
        super()._check_param()
        p = self._param
        if p.momentum != 0:
            raise self._fail(f"momentum cannot be used with RMSProp (got momentum "
                             f"{p.momentum:g}); remove it or set it to 0")
        if not 0 <= p.rms_decay < 1:
            raise self._fail(f"rms_decay must lie in [0, 1), got {p.rms_decay:g}")

    def compute_update_value(self, diffs: list[torch.Tensor], rates: list[float]) -> None:
        decay = f32(self._param.rms_decay)
        torch._foreach_mul_(self.history, decay)
        torch._foreach_addcmul_(self.history, diffs, diffs, value=f32(1.0 - decay))
        scale_by_rms(diffs, self.history, f32(self._param.delta), rates)
