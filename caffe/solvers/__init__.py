"""Solvers: Caffe's training loop and its six update rules (SGD, Nesterov, AdaGrad, RMSProp,
AdaDelta, Adam), with pycaffe's names.

``caffe.get_solver('solver.prototxt')`` builds the solver the file's ``type`` names (or its
deprecated ``solver_type``); ``caffe.SGDSolver(path)`` and friends build one rule directly.
"""

from __future__ import annotations

import os

from caffe.proto import caffe_pb2
from caffe.solvers.adadelta import AdaDeltaSolver
from caffe.solvers.adagrad import AdaGradSolver
from caffe.solvers.adam import AdamSolver
from caffe.solvers.nesterov import NesterovSolver
from caffe.solvers.rmsprop import RMSPropSolver
from caffe.solvers.sgd import SGDSolver
from caffe.solvers.solver import (
    SOLVER_TYPES,
    Solver,
    SolverAction,
    SolverFileError,
    load_solver_param,
    register_solver,
    solver_class,
)


def get_solver(solver: str | os.PathLike | caffe_pb2.SolverParameter) -> Solver:
    """The solver that ``solver`` (a solver file or a SolverParameter) describes."""
    param, source = load_solver_param(solver)
    return solver_class(param.type, source)(param, source)


__all__ = [
    "SOLVER_TYPES",
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "NesterovSolver",
    "RMSPropSolver",
    "SGDSolver",
    "Solver",
    "SolverAction",
    "SolverFileError",
    "get_solver",
    "register_solver",
    "solver_class",
]
