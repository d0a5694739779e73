"""The upgrade commands, as caffe subcommands and as their own console scripts:
upgrade_net_proto_text, upgrade_net_proto_binary, upgrade_solver_proto_text."""

from __future__ import annotations

import os
import sys

import pytest
from google.protobuf import text_format

from caffe.proto import caffe_pb2, files
from caffe.tools import cli

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                    "legacy")


def test_commands_are_registered():
    names = cli.build_parser()._subparsers._group_actions[0].choices
    for command in ("upgrade_net_proto_text", "upgrade_net_proto_binary",
                    "upgrade_solver_proto_text", "draw"):
        assert command in names


def test_upgrade_net_proto_text_writes_current_format(tmp_path, capsys):
    out = tmp_path / "cifar.prototxt"
    rc = cli.main(["upgrade_net_proto_text", os.path.join(DATA, "cifar10_full_train_test.prototxt"),
                   str(out)])
    assert rc == 0
    assert f"Wrote upgraded NetParameter text proto to {out}" in capsys.readouterr().out
    param = text_format.Parse(out.read_text(), caffe_pb2.NetParameter())
    assert not param.layers and param.layer[0].type == "Data"
    assert param.layer[0].transform_param.mean_file
    assert param.layer[2].param[0].lr_mult == 1


def test_upgrade_of_current_file_says_so_and_copies(tmp_path, capsys):
    src, out = tmp_path / "in.prototxt", tmp_path / "out.prototxt"
    src.write_text('name: "ok"\nlayer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n')
    assert cli.main(["upgrade_net_proto_text", str(src), str(out)]) == 0
    assert "already in latest proto format" in capsys.readouterr().err
    assert text_format.Parse(out.read_text(), caffe_pb2.NetParameter()).name == "ok"


def test_upgrade_problems_give_exit_status_1(tmp_path, capsys):
    src, out = tmp_path / "v0.prototxt", tmp_path / "out.prototxt"
    src.write_text('input: "x"\nlayers { layer { name: "r" type: "relu" kernelsize: 3 } '
                   'bottom: "x" top: "x" }\n')
    assert cli.main(["upgrade_net_proto_text", str(src), str(out)]) == 1
    assert "kernelsize" in capsys.readouterr().err
    assert out.exists()


@pytest.mark.parametrize("command", ["upgrade_net_proto_text", "upgrade_net_proto_binary"])
def test_unreadable_input_gives_exit_status_2(tmp_path, capsys, command):
    src = tmp_path / "junk.bin"
    src.write_bytes(bytes(range(256)) * 8)
    assert cli.main([command, str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "junk.bin" in err and "neither a text nor a binary NetParameter" in err
    assert not (tmp_path / "out").exists()
    assert cli.main([command, str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_upgrade_net_proto_binary_keeps_weights(tmp_path):
    out = tmp_path / "lenet.caffemodel"
    assert cli.main(["upgrade_net_proto_binary", os.path.join(DATA, "lenet_v1.caffemodel"),
                     str(out)]) == 0
    old = files.read_binary(os.path.join(DATA, "lenet_v1.caffemodel"), caffe_pb2.NetParameter())
    new = files.read_binary(str(out), caffe_pb2.NetParameter())
    old_blobs = {lp.name: lp.blobs for lp in old.layers}
    assert [lp.name for lp in new.layer] == [lp.name for lp in old.layers]
    for lp in new.layer:
        assert list(lp.blobs) == list(old_blobs[lp.name])


def test_upgrade_solver_proto_text(tmp_path, capsys):
    src, out = tmp_path / "solver.prototxt", tmp_path / "out.prototxt"
    src.write_text('net: "n.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\n')
    assert cli.main(["upgrade_solver_proto_text", str(src), str(out)]) == 0
    sp = text_format.Parse(out.read_text(), caffe_pb2.SolverParameter())
    assert sp.type == "Nesterov" and not sp.HasField("solver_type") and sp.net == "n.prototxt"
    assert "Wrote upgraded SolverParameter" in capsys.readouterr().out
    src.write_text('solver_type: ADAM\ntype: "SGD"\n')
    assert cli.main(["upgrade_solver_proto_text", str(src), str(out)]) == 2
    assert "both" in capsys.readouterr().err
    src.write_text("solver_typo: 1\n")
    assert cli.main(["upgrade_solver_proto_text", str(src), str(out)]) == 2
    assert "solver_typo" in capsys.readouterr().err


def test_console_script_entry_points(tmp_path, monkeypatch):
    from caffe.tools import upgrade_net_proto_text, upgrade_solver_proto_text

    out = tmp_path / "lenet.prototxt"
    monkeypatch.setattr(sys, "argv", ["upgrade_net_proto_text",
                                      os.path.join(DATA, "lenet.prototxt"), str(out)])
    assert upgrade_net_proto_text.main() == 0
    assert 'type: "Input"' in out.read_text()
    src = tmp_path / "s.prototxt"
    src.write_text("solver_type: ADAGRAD\n")
    monkeypatch.setattr(sys, "argv", ["upgrade_solver_proto_text", str(src), str(out)])
    assert upgrade_solver_proto_text.main() == 0
    assert 'type: "AdaGrad"' in out.read_text()


def test_console_scripts_are_declared():
    tomllib = pytest.importorskip("tomllib")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    for name in ("upgrade_net_proto_text", "upgrade_net_proto_binary",
                 "upgrade_solver_proto_text"):
        module, func = scripts[name].split(":")
        assert module == f"caffe.tools.{name}" and func == "main"


@pytest.mark.parametrize("center_only", [True, False])
def test_classify_scores_mnist_digits_with_the_v1_lenet(tmp_path, capsys, center_only):
    """pycaffe's classify.py as `caffe classify`: an .npy of images in [0, 1], a folder of
    PNGs, and a single image give the trained LeNet's classes."""
    import numpy as np
    from PIL import Image

    with np.load(os.path.join(DATA, "mnist_t10k_first100.npz")) as f:
        images, labels = f["images"][:20], f["labels"][:20]
    np.save(tmp_path / "digits.npy", images[..., None] / np.float32(255))
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    (tmp_path / "labels.txt").write_text("".join(f"digit {d}\n" for d in range(10)))
    common = ["--model_def", os.path.join(DATA, "lenet.prototxt"), "--pretrained_model",
              os.path.join(DATA, "lenet_v1.caffemodel"), "--images_dim", "28,28",
              "--raw_scale", "1"] + (["--center_only"] * center_only)
    scores = {}
    for name, source in (("npy", "digits.npy"), ("folder", "pngs"), ("one", "pngs/03.png")):
        out = tmp_path / f"{name}.npy"
        rc = cli.main(["classify", str(tmp_path / source), str(out), "--ext", "png",
                       "--print_results", "--labels_file", str(tmp_path / "labels.txt")]
                      + common)
        printed = capsys.readouterr().out
        assert rc == 0
        scores[name] = np.load(out)
    assert scores["npy"].shape == (20, 10)
    assert (scores["npy"].argmax(1) == labels).mean() >= 0.95
    assert f"0: digit {labels[3]} (" in printed  # the last run: image 3 alone
    np.testing.assert_allclose(scores["folder"], scores["npy"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores["one"][0], scores["npy"][3], rtol=1e-4, atol=1e-6)


def test_classify_errors_name_the_input(tmp_path, capsys):
    common = ["--model_def", os.path.join(DATA, "lenet.prototxt"), "--pretrained_model",
              os.path.join(DATA, "lenet_v1.caffemodel")]
    (tmp_path / "empty").mkdir()
    assert cli.main(["classify", str(tmp_path / "empty"), "o.npy"] + common) == 1
    assert "no '*.jpg' images in the folder" in capsys.readouterr().err
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert cli.main(["classify", str(tmp_path / "bad.npy"), "o.npy"] + common) == 1
    assert "bad.npy" in capsys.readouterr().err
    assert cli.main(["classify", str(tmp_path / "x.png"), "o.npy", "--images_dim", "28"]
                    + common) == 1
    assert "--images_dim takes 'height,width'" in capsys.readouterr().err
    assert cli.main(["classify", str(tmp_path / "x.png"), "o.npy", "--channel_swap", "2,1,0"]
                    + common) == 1
    assert "input 'data' has 1 channels" in capsys.readouterr().err


def test_classify_mean_file_is_one_value_per_channel(tmp_path):
    import numpy as np

    import caffe
    from caffe.tools.classify import _mean

    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "m.npy", image)
    (tmp_path / "m.binaryproto").write_bytes(
        caffe.io.array_to_blobproto(image[None]).SerializeToString())
    for name in ("m.npy", "m.binaryproto"):
        np.testing.assert_allclose(_mean(str(tmp_path / name)), [5.5, 17.5])
    np.save(tmp_path / "flat.npy", image[0, 0])
    with pytest.raises(caffe.errors.FileFormatError, match="flat.npy.*shape \\(4,\\)"):
        _mean(str(tmp_path / "flat.npy"))
