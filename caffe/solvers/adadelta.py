"""AdaDelta (Caffe's AdaDeltaSolver, Zeiler 2012).

With decay m = ``momentum``: ``G = m * G + (1 - m) * g^2``;
``u = g * sqrt((U + delta) / (G + delta))``; ``U = m * U + (1 - m) * u^2``; the update is
``r * u``. The history holds G for every parameter, then U for every parameter.
"""

from __future__ import annotations

import torch

from caffe.solvers.sgd import SGDSolver, f32
from caffe.solvers.solver import register_solver


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    """AdaDelta: the step size follows the ratio of update and gradient RMS."""

    history_sets = 2

    def compute_update_value(self, diffs: list[torch.Tensor], rates: list[float]) -> None:
        p = self._param
        n = len(diffs)
        grad_sq, update_sq = self.history[:n], self.history[n:]
        momentum, delta = f32(p.momentum), f32(p.delta)
        keep = f32(1.0 - momentum)
        torch._foreach_mul_(grad_sq, momentum)
        torch._foreach_addcmul_(grad_sq, diffs, diffs, value=keep)
        ratio = torch._foreach_add(update_sq, delta)
        torch._foreach_div_(ratio, torch._foreach_add(grad_sq, delta))
        torch._foreach_sqrt_(ratio)
        torch._foreach_mul_(diffs, ratio)
        torch._foreach_mul_(update_sq, momentum)
        torch._foreach_addcmul_(update_sq, diffs, diffs, value=keep)
        torch._foreach_mul_(diffs, rates)
