"""``caffe.pycaffe``: the module of pycaffe that wraps its compiled one, for code that imports
from it (``from caffe.pycaffe import Net``, ``from caffe.pycaffe import *``). Its classes are
caffe's own: ``Net`` and the solvers, ``NCCL`` and ``Timer``."""

from caffe import (
    NCCL,
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    Net,
    RMSPropSolver,
    SGDSolver,
    Timer,
)

__all__ = ["Net", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "NCCL", "Timer"]
