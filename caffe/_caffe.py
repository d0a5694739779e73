"""``caffe._caffe``: the names of pycaffe's compiled module, for code that imports them from
there (``from caffe._caffe import Layer as BaseLayer, log``, ``RawBlobVec``).

Everything ``import caffe`` gives is here too; pycaffe's vector wrappers are Python lists: a
layer's ``bottom`` and ``top`` are lists of blobs (``RawBlobVec``), ``self.blobs`` is a
``BlobVec``, and the others are plain ``list``.
"""

from caffe import *  # noqa: F403  (Net, Layer, Blob, the solvers, log, set_mode_cpu, ...)
from caffe import __version__  # noqa: F401
from caffe.blob import BlobVec  # noqa: F401
from caffe.proto.caffe_pb2 import LayerParameter, SolverParameter  # noqa: F401
from caffe.solvers.solver import Solver  # noqa: F401

RawBlobVec = LayerVec = StringVec = IntVec = DtypeVec = NetVec = BoolVec = list
