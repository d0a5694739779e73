"""Tools for testing layers: the gradient checker (Caffe's GradientChecker, public here) and
``check_layer``, what ``caffe check-layer`` runs (gradient, reshape and propagate_down checks
of one layer, as a report)."""

from caffe.testing.gradient_check import GradientChecker, GradientCheckError, make_blobs
from caffe.testing.layer_check import BottomSpec, Report, check_layer

__all__ = ["BottomSpec", "GradientCheckError", "GradientChecker", "Report", "check_layer",
           "make_blobs"]
