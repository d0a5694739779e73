"""neocaffe: Caffe's Python interface (pycaffe) on PyTorch.

``import caffe`` gives the names pycaffe gives: ``Net``, ``Layer``, ``TRAIN``/``TEST``,
``set_mode_cpu``/``set_mode_gpu``/``set_device``, ``set_random_seed``, ``layer_type_list``,
``init_log``/``log``, the solvers, ``NCCL``/``has_nccl`` (data-parallel training on
torch.distributed), ``Timer``, ``Classifier``/``Detector``, ``io`` and NetSpec's ``layers``,
``params``, ``NetSpec`` and ``to_proto``.
"""

from caffe import _layers, io  # noqa: F401  (_layers registers every built-in layer type)
from caffe._common import (
    get_precision,
    init_log,
    log,
    set_device,
    set_mode_cpu,
    set_mode_gpu,
    set_multiprocess,
    set_precision,
    set_random_seed,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from caffe.blob import Blob
from caffe.classifier import Classifier
from caffe.detector import Detector
from caffe.layer import TEST, TRAIN, Layer, Phase
from caffe.net import Net
from caffe.net_spec import NetSpec, layers, params, to_proto
from caffe.parallel import NCCL, has_nccl
from caffe.registry import layer_type_list, register_layer
from caffe.solvers import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    get_solver,
)
from caffe.timer import Timer

#: the BVLC Caffe release whose interface and numbers this reproduces, as pycaffe reports it;
#: neocaffe's own version is the installed package's (``importlib.metadata.version``)
__version__ = "1.0.0"

__all__ = [
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "NesterovSolver",
    "RMSPropSolver",
    "SGDSolver",
    "get_solver",
    "Blob",
    "Classifier",
    "Detector",
    "io",
    "Layer",
    "NCCL",
    "Net",
    "NetSpec",
    "layers",
    "params",
    "to_proto",
    "Phase",
    "TEST",
    "TRAIN",
    "Timer",
    "__version__",
    "get_precision",
    "has_nccl",
    "init_log",
    "layer_type_list",
    "log",
    "register_layer",
    "set_device",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_multiprocess",
    "set_precision",
    "set_random_seed",
    "set_solver_count",
    "set_solver_rank",
    "solver_count",
    "solver_rank",
]

# pycaffe's own modules, reachable as attributes after ``import caffe`` as they are there
# (``caffe._caffe.Net``, ``caffe.pycaffe.Net``)
from caffe import _caffe, pycaffe  # noqa: E402, F401
