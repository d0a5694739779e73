"""Reproducible speed comparisons of neocaffe against native PyTorch twins (run as scripts or
``python -m benchmarks.<name>``)."""
