"""Tools for testing layers: the gradient checker (Caffe's GradientChecker, public here)."""

from caffe.testing.gradient_check import GradientChecker, GradientCheckError, make_blobs

__all__ = ["GradientCheckError", "GradientChecker", "make_blobs"]
