"""Smoke test of benchmarks/data_loader.py at a tiny size (16 JPEG Datums of 64x64, crop 56,
batch 4, a tiny net instead of CaffeNet, one sample): the loader and training measurements
run and the JSON/Markdown results are written. No timing is asserted."""

import json
import os

import torch

from benchmarks import data_loader


def test_data_loader_benchmark_runs_at_tiny_size(tmp_path):
    torch.set_num_threads(1)
    before = os.environ.get("CAFFE_DATA_WORKERS")
    opts = data_loader.Options(images=16, size=64, crop=56, loader_batch=4, loader_batches=2,
                               workers=[1, 2], net="tiny", batch=4, repeats=1, inner=1,
                               warmup=0)
    results = data_loader.run(opts, log=lambda _: None)
    assert os.environ.get("CAFFE_DATA_WORKERS") == before
    assert [r["workers"] for r in results["loader"]] == [1, 2]
    assert all(r["images_per_s"] > 0 for r in results["loader"])
    train = results["training"]
    assert set(train["sides"]) == {"data_layer", "in_memory"}
    for side in train["sides"].values():
        assert side["step_s"] > 0 and len(side["wall_samples"]) == 1
        assert torch.isfinite(torch.tensor(side["final_loss"]))
    assert train["ratio_wall"] > 0 and train["ratio_cpu"] > 0
    results["command"] = "smoke"
    json_path, md_path = data_loader.write(results, str(tmp_path), "smoke")
    with open(json_path) as f:
        assert json.load(f)["options"]["net"] == "tiny"
    with open(md_path) as f:
        text = f.read()
    assert "Step ratio Data / in-memory" in text and "| 2 |" in text


def test_fed_by_replaces_the_data_and_label_inputs():
    train = data_loader.tiny_train_param(4, 56)
    layer = data_loader.data_layer("db", "mean", 4, 56)
    fed = data_loader.fed_by(train, layer)
    assert [lp.type for lp in fed.layer][:2] == ["Data", "Convolution"]
    assert not any(lp.type == "Input" for lp in fed.layer)
    assert len(fed.layer) == len(train.layer) - 1
