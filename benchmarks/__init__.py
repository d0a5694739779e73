"""Reproducible speed comparisons of neocaffe against native PyTorch twins (run as scripts or
``python -m benchmarks.<name>``)."""

import os

# the output is the tables: Caffe's INFO log (on by default, as in pycaffe) stays quiet unless
# GLOG_minloglevel asks for it
os.environ.setdefault("GLOG_minloglevel", "2")
