"""Nesterov's accelerated gradient (Caffe's NesterovSolver).

With momentum m and local rate r: ``V' = m * V + r * g``; the update is
``(1 + m) * V' - m * V`` (step back by the old momentum, then over-step by the new one).
"""

from __future__ import annotations

import torch

from caffe.solvers.sgd import SGDSolver, f32
from caffe.solvers.solver import register_solver


@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    """SGD with Nesterov momentum."""

    def compute_update_value(self, diffs: list[torch.Tensor], rates: list[float]) -> None:
        momentum = f32(self._param.momentum)
        previous = torch._foreach_mul(self.history, momentum)
        super().compute_update_value(diffs, rates)
        torch._foreach_mul_(diffs, f32(1.0 + momentum))
        torch._foreach_sub_(diffs, previous)
