"""Caffe -> PyTorch -> Caffe: export LeNet, fine-tune the program in plain PyTorch, bring the
weights back and save a caffemodel that BVLC Caffe loads (docs/porting.md)."""

import os
import tempfile

import numpy as np
import torch

import caffe
import caffe.export

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "..", "..", "examples", "mnist", "lenet.prototxt")

caffe.set_random_seed(0)
net = caffe.Net(DEPLOY, caffe.TEST)  # add weights="lenet.caffemodel" for a trained net
with tempfile.TemporaryDirectory() as tmp:
    # 1. export: a program plain PyTorch loads (torch.export.load), weights as parameters
    program = caffe.export.to_torch(net, dynamic_batch=True)
    torch.export.save(program, os.path.join(tmp, "lenet.pt2"))
    module = torch.export.load(os.path.join(tmp, "lenet.pt2")).module()
    print("parameters:", [name for name, _ in module.named_parameters()])

    # 2. fine-tune it like any PyTorch module (here: push 8 random images towards class 3)
    x = torch.randn(8, 1, 28, 28)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
    for step in range(3):
        optimizer.zero_grad()
        loss = -module(x)[0][:, 3].log().mean()
        loss.backward()
        optimizer.step()
        print(f"step {step}: loss {loss.item():.4f}")

    # 3. back into the net, and out as a caffemodel
    caffe.export.copy_parameters(net, module)
    net.save(os.path.join(tmp, "tuned.caffemodel"))
    tuned = caffe.Net(DEPLOY, caffe.TEST, weights=os.path.join(tmp, "tuned.caffemodel"))
    tuned.blobs["data"].reshape(8, 1, 28, 28)
    tuned.reshape()
    tuned.blobs["data"].data[...] = x.numpy()
    with torch.no_grad():
        expected = module(x)[0].numpy()
    np.testing.assert_allclose(tuned.forward()["prob"], expected, rtol=1e-5, atol=1e-7)
    print("the caffemodel gives the fine-tuned program's numbers")
