"""AdaGrad (Caffe's AdaGradSolver): per-element rates from the sum of squared gradients.

``H += g^2``; the update is ``r * g / (sqrt(H) + delta)``. Momentum is not allowed.
"""

from __future__ import annotations

import torch

from caffe.solvers.sgd import SGDSolver, f32
from caffe.solvers.solver import register_solver


def scale_by_rms(diffs: list[torch.Tensor], squares: list[torch.Tensor], delta: float,
                 rates: list[float]) -> None:
    """``g = r * g / (sqrt(squares) + delta)``, shared by AdaGrad and RMSProp."""
    denom = torch._foreach_sqrt(squares)
    torch._foreach_add_(denom, delta)
    torch._foreach_div_(diffs, denom)
    torch._foreach_mul_(diffs, rates)


@register_solver("AdaGrad")
class AdaGradSolver(SGDSolver):
    """AdaGrad: each element's rate shrinks with its accumulated squared gradient."""

    def _check_param(self) -> None:
        super()._check_param()
        if self._param.momentum != 0:
            raise self._fail(f"momentum cannot be used with AdaGrad (got momentum "
                             f"{self._param.momentum:g}); remove it or set it to 0")

    def compute_update_value(self, diffs: list[torch.Tensor], rates: list[float]) -> None:
        torch._foreach_addcmul_(self.history, diffs, diffs)
        scale_by_rms(diffs, self.history, f32(self._param.delta), rates)
