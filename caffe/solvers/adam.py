"""Adam (Caffe's AdamSolver, Kingma & Ba 2014).

With b1 = ``momentum``, b2 = ``momentum2``, eps = ``delta`` and t = iter + 1:
``M = b1 * M + (1 - b1) * g``; ``V = b2 * V + (1 - b2) * g^2``; the update is
``r * sqrt(1 - b2^t) / (1 - b1^t) * M / (sqrt(V) + eps)``. The history holds M for every
parameter, then V for every parameter.
"""

from __future__ import annotations

import math

import torch

from caffe.solvers.sgd import SGDSolver, f32
from caffe.solvers.solver import register_solver


@register_solver("Adam")
class AdamSolver(SGDSolver):
    """Adam: bias-corrected first and second moment estimates."""

    history_sets = 2

    def compute_update_value(self, diffs: list[torch.Tensor], rates: list[float]) -> None:
        p = self._param
        n = len(diffs)
        m, v = self.history[:n], self.history[n:]
        beta1, beta2 = f32(p.momentum), f32(p.momentum2)
        t = self.iter + 1
        correction = f32(math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t))
        torch._foreach_mul_(m, beta1)
        torch._foreach_add_(m, diffs, alpha=f32(1.0 - beta1))
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, diffs, diffs, value=f32(1.0 - beta2))
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, f32(p.delta))
        torch._foreach_copy_(diffs, m)
        torch._foreach_div_(diffs, denom)
        torch._foreach_mul_(diffs, [f32(r * correction) for r in rates])
