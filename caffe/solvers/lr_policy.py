"""Caffe's learning-rate policies: the rate an SGD-family solver uses at iteration ``it``.

========== ===========================================================================
policy     rate
========== ===========================================================================
fixed      base_lr
step       base_lr * gamma ^ floor(it / stepsize)
exp        base_lr * gamma ^ it
inv        base_lr * (1 + gamma * it) ^ (-power)
multistep  base_lr * gamma ^ k, k = number of ``stepvalue`` entries reached so far
poly       base_lr * (1 - it / max_iter) ^ power
sigmoid    base_lr / (1 + exp(-gamma * (it - stepsize)))
========== ===========================================================================

``multistep`` advances its step counter by at most one per call, as Caffe does, so the counter
(``current_step``) is part of the solver state.
"""

from __future__ import annotations

import math

import numpy as np

from caffe.errors import SolverError
from caffe.proto import caffe_pb2

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param: caffe_pb2.SolverParameter, source: str = "solver") -> None:
    """Raise SolverError when the policy is unknown or its parameters are out of range."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise SolverError(
            f"{source}: unknown lr_policy '{policy}'; known policies: {', '.join(POLICIES)}")
    if policy == "step" and param.stepsize <= 0:
        raise SolverError(
            f"{source}: lr_policy 'step' needs stepsize > 0, got {param.stepsize}")
    # (sigmoid: any stepsize is its midpoint, and a negative gamma makes it a decay)
    if policy in ("step", "exp", "inv", "multistep") and param.gamma < 0:
        raise SolverError(
            f"{source}: lr_policy '{policy}' needs gamma >= 0, got {param.gamma:g}")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverError(f"{source}: lr_policy 'poly' needs max_iter > 0, got {param.max_iter}")


def _pow(x: float, y: float) -> float:
    """``x ** y`` that overflows to inf and gives NaN for a negative base, as C's pow does."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan


def learning_rate(param: caffe_pb2.SolverParameter, it: int,
                  current_step: int) -> tuple[float, int]:
    """``(rate, current_step)`` at iteration ``it``; the rate is rounded to float32 as Caffe's
    single-precision solver computes it."""
    policy = param.lr_policy
    base = param.base_lr
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = it // param.stepsize
        rate = base * _pow(param.gamma, current_step)
    elif policy == "exp":
        rate = base * _pow(param.gamma, it)
    elif policy == "inv":
        rate = base * _pow(1.0 + param.gamma * it, -param.power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        rate = base * _pow(param.gamma, current_step)
    elif policy == "poly":
        rate = base * _pow(1.0 - it / param.max_iter, param.power)
    elif policy == "sigmoid":
        z = -param.gamma * (it - param.stepsize)
        rate = base / (1.0 + math.exp(z)) if z < 700.0 else 0.0
    else:
        raise SolverError(
            f"unknown lr_policy '{policy}'; known policies: {', '.join(POLICIES)}")
    return float(np.float32(rate)), current_step
