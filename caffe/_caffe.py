"""``caffe._caffe``: the names of pycaffe's compiled module, for code that imports them from
there (``from caffe._caffe import Layer as BaseLayer, log``, ``RawBlobVec``).

pycaffe's vector wrappers are Python lists here: a layer's ``bottom`` and ``top`` are lists of
blobs (``RawBlobVec``), ``self.blobs`` is a ``BlobVec``, and the others are plain ``list``.
"""

from caffe import __version__
from caffe._common import (
    init_log,
    log,
    set_device,
    set_mode_cpu,
    set_mode_gpu,
    set_multiprocess,
    set_random_seed,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from caffe.blob import Blob, BlobVec
from caffe.layer import Layer, Phase
from caffe.net import Net
from caffe.parallel import NCCL, has_nccl
from caffe.registry import layer_type_list
from caffe.solvers import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    get_solver,
)
from caffe.solvers.solver import Solver
from caffe.timer import Timer

RawBlobVec = LayerVec = StringVec = IntVec = DtypeVec = NetVec = BoolVec = list

__all__ = [
    "AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Blob", "BlobVec", "BoolVec", "DtypeVec",
    "IntVec", "Layer", "LayerVec", "NCCL", "Net", "NetVec", "NesterovSolver", "Phase",
    "RMSPropSolver", "RawBlobVec", "SGDSolver", "Solver", "StringVec", "Timer", "__version__",
    "get_solver", "has_nccl", "init_log", "layer_type_list", "log", "set_device",
    "set_mode_cpu", "set_mode_gpu", "set_multiprocess", "set_random_seed", "set_solver_count",
    "set_solver_rank", "solver_count", "solver_rank",
]
