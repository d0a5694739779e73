"""Arithmetic of a net, for throughput as a fraction of the card's peak.

Counted: multiply-adds (2 FLOPs each) of Convolution, Deconvolution and InnerProduct, the
layers that dominate every benchmark net; a training pass (forward + backward) counts three
times the forward (backward computes the input gradient and the weight gradient, each as
costly as the forward)."""

from __future__ import annotations

import math

import torch

#: dense float32 peak (no tensor cores: Caffe's IEEE float32), FLOP/s, by a substring of
#: ``torch.cuda.get_device_name``; from the vendors' datasheets (SXM parts)
FP32_PEAK = {"H200": 67e12, "H100": 67e12, "A100": 19.5e12, "V100": 15.7e12}


def forward_flops(net) -> int:
    """FLOPs of one forward pass of ``net`` (a caffe.Net that has been reshaped)."""
    total = 0
    for layer, bottoms, tops in zip(net._layers, net._bottom_vecs, net._top_vecs):
        if layer.type in ("Convolution", "Deconvolution"):
            w = layer.blobs[0].shape  # (out, in/group, *k) or (in, out/group, *k) for deconv
            per_output = w[1] * math.prod(w[2:])
            if layer.type == "Convolution":
                total += 2 * per_output * sum(t.count for t in tops)
            else:  # each input pixel scatters (out/group * k) products
                total += 2 * per_output * sum(b.count for b in bottoms)
        elif layer.type == "InnerProduct":
            total += 2 * layer.blobs[0].count * sum(t.count for t in tops) // layer.num_output
    return total


def pass_flops(net, mode: str) -> int:
    """FLOPs of one call in a benchmark ``mode`` (forward, infer_b1, fwdbwd, solver)."""
    f = forward_flops(net)
    return f if mode in ("forward", "infer_b1") else 3 * f


def fp32_peak() -> float | None:
    """The current CUDA device's dense float32 peak in FLOP/s, when known."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in FP32_PEAK.items() if k in name), None)
