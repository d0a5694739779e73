"""``caffe train``, ``caffe test``, ``caffe time`` and ``caffe plot``: flags (both -flag and
--flag), Caffe's log lines, resuming, fine-tuning, net states, signals, the progress bar."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2, files
from caffe.solvers import SolverAction
from caffe.tools import cli
from caffe.tools.train import SignalActions

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "t"
  dummy_data_param { shape { dim: 8 dim: 5 } shape { dim: 8 dim: 2 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "extra" type: "Power" bottom: "y" top: "y2" power_param { scale: 2 }
  include { stage: "extra" } }
layer { name: "deep" type: "Power" bottom: "y" top: "y3" include { min_level: 1 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with net.prototxt and solver.prototxt, as the working directory; INFO logging
    (tests/conftest.py restores the log afterwards)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLOG_minloglevel", "0")
    (tmp_path / "net.prototxt").write_text(NET)
    write_solver(tmp_path)
    return tmp_path


def write_solver(folder, name: str = "solver.prototxt", extra: str = "") -> str:
    text = ('net: "net.prototxt"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "step"\n'
            'gamma: 0.5\nstepsize: 4\ndisplay: 2\nmax_iter: 6\ntest_iter: 2\n'
            'test_interval: 3\nsnapshot: 4\nsnapshot_prefix: "snaps/tiny"\nrandom_seed: 5\n'
            'solver_mode: CPU\n' + extra)
    (folder / name).write_text(text)
    return name


def caffe_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_device_side_assert_gets_a_hint_naming_the_label_check(monkeypatch, capsys):
    def fails(args):
        raise RuntimeError("CUDA error: device-side assert triggered")
    monkeypatch.setattr(cli, "_commands", lambda: {"train": _FakeCommand(fails)})
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert "device-side assert" in err and "CAFFE_CHECK_LABELS=1" in err


def test_other_runtime_errors_propagate(monkeypatch):
    def fails(args):
        raise RuntimeError("something else")
    monkeypatch.setattr(cli, "_commands", lambda: {"train": _FakeCommand(fails)})
    with pytest.raises(RuntimeError, match="something else"):
        cli.main(["train"])


class _FakeCommand:
    HELP = "a command that fails"

    def __init__(self, run):
        self.run = run

    @staticmethod
    def add_arguments(parser):
        pass


def test_train_writes_caffe_log_lines_and_snapshots(workdir, capsys):
    rc, out, err = caffe_cli(capsys, "train", "-solver", "solver.prototxt")
    assert rc == 0, err
    for line in ("Use CPU.", "Starting Optimization", "Solving tiny",
                 "Iteration 0, Testing net (#0)", "    Test net output #0: loss = ",
                 "Iteration 0 (", "iters), loss = ", "    Train net output #0: loss = ",
                 "Iteration 0, lr = 0.05", "Iteration 4, lr = 0.025",
                 "Snapshotting to binary proto file snaps/tiny_iter_4.caffemodel",
                 "Snapshotting solver state to binary proto file snaps/tiny_iter_4.solverstate",
                 "Iteration 6, loss = ", "Iteration 6, Testing net (#0)",
                 "Optimization Done."):
        assert line in err, line
    assert "] Iteration 2 (" in err  # glog prefix: "I1126 12:00:00.000000  pid x.py] "
    assert sorted(os.listdir("snaps")) == [
        "tiny_iter_4.caffemodel", "tiny_iter_4.solverstate", "tiny_iter_4.solverstate.rng",
        "tiny_iter_6.caffemodel", "tiny_iter_6.solverstate", "tiny_iter_6.solverstate.rng"]
    assert "snaps/tiny_iter_6.caffemodel" in out


def test_double_dash_flags_and_resume_from_snapshot(workdir, capsys):
    assert caffe_cli(capsys, "train", "--solver=solver.prototxt")[0] == 0
    os.rename("snaps", "first")
    rc, _, err = caffe_cli(capsys, "train", "--solver", "solver.prototxt", "--snapshot",
                           "first/tiny_iter_4.solverstate")
    assert rc == 0, err
    assert "Resuming from first/tiny_iter_4.solverstate" in err
    assert "Iteration 4, lr = 0.025" in err and "Iteration 0, lr" not in err
    state = files.read_binary("snaps/tiny_iter_6.solverstate", caffe_pb2.SolverState())
    assert state.iter == 6 and state.learned_net == "snaps/tiny_iter_6.caffemodel"
    assert not os.path.exists("snaps/tiny_iter_4.caffemodel")  # resumed after iteration 4
    assert "data layers start again at their first batch" in err  # as in Caffe


def test_exact_resume_restores_the_saved_data_and_random_state(workdir, capsys):
    assert caffe_cli(capsys, "train", "-solver", "solver.prototxt")[0] == 0
    os.rename("snaps", "first")
    rc, _, err = caffe_cli(capsys, "train", "-solver", "solver.prototxt", "-snapshot",
                           "first/tiny_iter_4.solverstate", "-exact_resume")
    assert rc == 0, err
    assert "Iteration 4, lr = 0.025" in err and "start again at their first batch" not in err
    assert files.read_binary("first/tiny_iter_6.caffemodel", caffe_pb2.NetParameter()) \
        == files.read_binary("snaps/tiny_iter_6.caffemodel", caffe_pb2.NetParameter())


def test_every_caffe_command_takes_caffes_global_flags(workdir, capsys):
    # gflags are global in Caffe: a command ignores the flags it does not use
    rc, _, err = caffe_cli(capsys, "time", "-model", "net.prototxt", "-iterations", "1",
                           "-weights", "unused.caffemodel", "-solver", "x", "-snapshot", "y",
                           "-sigint_effect", "none")
    assert rc == 0, err
    assert caffe_cli(capsys, "device_query", "-solver", "x", "-model", "y")[0] == 0
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("caffe version 1.0.0 (neocaffe ")
    assert caffe.__version__ == "1.0.0"  # pycaffe's, which scripts compare against


def test_fine_tune_from_comma_separated_weights(workdir, capsys):
    assert caffe_cli(capsys, "train", "-solver", "solver.prototxt")[0] == 0
    rc, _, err = caffe_cli(capsys, "train", "-solver", "solver.prototxt", "-weights",
                           "snaps/tiny_iter_4.caffemodel,snaps/tiny_iter_6.caffemodel")
    assert rc == 0, err
    assert "Finetuning from snaps/tiny_iter_4.caffemodel" in err
    assert "Finetuning from snaps/tiny_iter_6.caffemodel" in err


def test_level_and_stage_go_into_the_train_state(workdir, capsys):
    rc, _, err = caffe_cli(capsys, "train", "-solver", "solver.prototxt", "-level", "1",
                           "-stage", "extra,other")
    assert rc == 0, err
    saved = files.read_binary("snaps/tiny_iter_6.caffemodel", caffe_pb2.NetParameter())
    assert {"extra", "deep"} <= {lp.name for lp in saved.layer}
    # outputs in name order: loss (1 value), y2 and y3 (16 values each)
    assert "Train net output #1: y2 = " in err and "Train net output #17: y3 = " in err


@pytest.mark.parametrize("argv, message", [
    (["train"], "Need a solver definition"),
    (["train", "-solver", "solver.prototxt", "-weights", "a", "-snapshot", "b"], "not both"),
    (["train", "-solver", "solver.prototxt", "-exact_resume"], "give it with -snapshot"),
    (["train", "-solver", "missing.prototxt"], "does not exist"),
    (["train", "-solver", "solver.prototxt", "-gpu", "x"], "-gpu takes"),
    (["test", "-model", "net.prototxt"], "Need model weights"),
    (["test", "-weights", "w"], "Need a model definition"),
    (["time"], "Need a model definition"),
])
def test_usage_errors(workdir, capsys, argv, message):
    rc, _, err = caffe_cli(capsys, *argv)
    assert rc == 1
    assert message in err


def test_gpu_solver_mode_without_cuda_falls_back_to_cpu(workdir, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    write_solver(workdir, "gpu.prototxt", "solver_mode: GPU\n")
    rc, _, err = caffe_cli(capsys, "train", "-solver", "gpu.prototxt")
    assert rc == 0
    assert "sees no CUDA device; training on the CPU" in err


def test_progress_bar(workdir, capsys):
    rc, _, err = caffe_cli(capsys, "train", "-solver", "solver.prototxt", "-progress", "on")
    assert rc == 0
    assert "\r[" in err and " it/s ETA " in err and "/6 loss " in err


def test_caffe_test_scores_a_model(workdir, capsys):
    assert caffe_cli(capsys, "train", "-solver", "solver.prototxt")[0] == 0
    rc, _, err = caffe_cli(capsys, "test", "-model", "net.prototxt", "-weights",
                           "snaps/tiny_iter_6.caffemodel", "-iterations", "3")
    assert rc == 0, err
    assert "Running for 3 iterations." in err
    assert "Batch 0, loss = " in err and "Batch 2, loss = " in err and "Batch 3" not in err
    assert "Loss: " in err
    final = [line for line in err.splitlines() if "] loss = " in line]
    assert len(final) == 1 and "(* 1 = " in final[0]


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_caffe_time_reports_per_layer_times(workdir, capsys, phase):
    rc, _, err = caffe_cli(capsys, "time", "-model", "net.prototxt", "-iterations", "2",
                           "-phase", phase)
    assert rc == 0, err
    assert "Iteration: 2 forward-backward time: " in err
    assert "        ip\tforward: " in err
    assert "Average Forward pass: " in err and "Total Time: " in err
    assert ("Average Backward pass: " in err) == (phase == "TRAIN")
    assert ("\tbackward: " in err) == (phase == "TRAIN")


def test_plot_draws_the_curves_of_a_log(workdir, capsys):
    rc, _, err = caffe_cli(capsys, "train", "-solver", "solver.prototxt")
    (workdir / "train.log").write_text(err)
    rc, out, err = caffe_cli(capsys, "plot", "train.log", "-o", "curves.png")
    assert rc == 0, err
    assert "train loss" in out and "test loss" in out and "lr" in out
    with Image.open("curves.png") as im:
        # two panels: losses (train and test) and the learning rate; no other outputs
        assert im.format == "PNG" and im.size == (900, 600)
    (workdir / "empty.log").write_text("nothing here\n")
    rc, _, err = caffe_cli(capsys, "plot", "empty.log")
    assert rc == 1 and "no training or test values" in err


BVLC_LOG = """I1231 23:59:58.000000  1 solver.cpp:48] Initializing solver from parameters:
I1231 23:59:59.500000  1 solver.cpp:62] Solving LeNet
I1231 23:59:59.600000  1 solver.cpp:330] Iteration 0, Testing net (#0)
I1231 23:59:59.700000  1 solver.cpp:397]     Test net output #0: accuracy = 0.1
I1231 23:59:59.700000  1 solver.cpp:397]     Test net output #1: loss = 2.3 (* 1 = 2.3 loss)
I1231 23:59:59.800000  1 solver.cpp:218] Iteration 0 (0 iter/s, 0.1s/100 iters), loss = 2.4
I1231 23:59:59.800000  1 solver.cpp:237]     Train net output #0: loss = 2.4 (* 1 = 2.4 loss)
I1231 23:59:59.800000  1 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I0101 00:00:01.500000  1 solver.cpp:218] Iteration 100 (9 iter/s, 11s/100 iters), loss = 0.3
I0101 00:00:01.500000  1 solver.cpp:237]     Train net output #0: loss = 0.25 (* 1 = 0.25 loss)
I0101 00:00:01.500000  1 sgd_solver.cpp:105] Iteration 100, lr = 0.005
I0101 00:00:02.000000  1 solver.cpp:330] Iteration 200, Testing net (#0)
I0101 00:00:02.500000  1 solver.cpp:397]     Test net output #0: accuracy = 0.97
I0101 00:00:02.500000  1 solver.cpp:397]     Test net output #1: loss = 0.1 (* 1 = 0.1 loss)
I0101 00:00:02.600000  1 solver.cpp:330] Iteration 200, Testing net (#1)
I0101 00:00:02.700000  1 solver.cpp:397]     Test net output #0: accuracy = 0.95
"""


def test_plot_reads_bvlc_caffe_logs():
    from caffe.tools.plot import parse_log

    panels = {p.title: p.series for p in parse_log(BVLC_LOG.splitlines())}
    assert panels["loss"]["train loss"] == [(0, 2.4), (100, 0.3)]
    assert panels["loss"]["test loss"] == [(0, 2.3), (200, 0.1)]
    assert panels["outputs"]["test accuracy"] == [(0, 0.1), (200, 0.97)]
    assert panels["outputs"]["test#1 accuracy"] == [(200, 0.95)]
    assert panels["learning rate"]["lr"] == [(0, 0.01), (100, 0.005)]


def test_plot_draws_plot_training_log_charts(tmp_path, capsys):
    from caffe.tools.plot import chart

    logs = {"a.log": BVLC_LOG.splitlines(), "runs/b.log": BVLC_LOG.splitlines()[:6]}
    loss = chart(6, logs)  # train loss vs. iters, one curve per log
    assert loss.title == "Train loss vs. Iters"
    assert loss.series == {"a": [(0.0, 2.4), (100.0, 0.3)], "b": [(0.0, 2.4)]}
    accuracy = chart(1, logs)  # test accuracy (output #0 of test net 0) vs. seconds
    assert accuracy.series["a"] == [(0.2, 0.1), (3.0, 0.97)]
    assert chart(2, logs).series["a"] == [(0.0, 2.3), (200.0, 0.1)]  # test output #1
    (tmp_path / "a.log").write_text(BVLC_LOG)
    rc, out, err = caffe_cli(capsys, "plot", "4", str(tmp_path / "lr.png"),
                             str(tmp_path / "a.log"))
    assert rc == 0, err
    assert "Train learning rate vs. Iters: a" in out and (tmp_path / "lr.png").exists()
    rc, _, err = caffe_cli(capsys, "plot", "9", "x.png", str(tmp_path / "a.log"))
    assert rc == 1 and "0: Test accuracy vs. Iters" in err


def test_signal_actions_map_effects():
    actions = SignalActions("snapshot", "stop")
    try:
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert actions() == SolverAction.SNAPSHOT  # training goes on, as in Caffe
        assert actions() == SolverAction.NONE
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert actions() == SolverAction.STOP
    finally:
        actions.close()
    actions = SignalActions("none", "snapshot")
    try:
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert actions() == SolverAction.NONE
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert actions() == SolverAction.SNAPSHOT
    finally:
        actions.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _train_until_interrupted(tmp_path, effect: str):
    """``caffe train`` of a very long run, SIGINT sent once iteration 3 is logged; returns the
    process and the stderr read so far."""
    (tmp_path / "net.prototxt").write_text(NET)
    write_solver(tmp_path, extra="snapshot_after_train: false\n")
    text = (tmp_path / "solver.prototxt").read_text()
    text = text.replace("max_iter: 6", "max_iter: 100000000").replace("snapshot: 4", "")
    (tmp_path / "solver.prototxt").write_text(text.replace("display: 2", "display: 1"))
    env = dict(os.environ, GLOG_minloglevel="0")
    proc = subprocess.Popen([sys.executable, "-m", "caffe", "train", "-solver",
                             "solver.prototxt", "-sigint_effect", effect], cwd=tmp_path,
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen = _read_until(proc, "Iteration 3 (")
    assert "Iteration 3 (" in seen, seen  # the display line of solver.cpp's Step
    proc.send_signal(signal.SIGINT)
    return proc, seen


def _read_until(proc, text: str) -> str:
    deadline = time.time() + 120
    seen = ""
    while text not in seen and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    return seen


def test_sigint_stop_ends_training_cleanly(tmp_path):
    proc, seen = _train_until_interrupted(tmp_path, "stop")
    out, err = proc.communicate(timeout=120)
    err = seen + err
    assert proc.returncode == 0, err
    assert "Received SIGINT" in err and "Optimization stopped early." in err
    assert not (tmp_path / "snaps").exists()  # snapshot_after_train is off


def test_sigint_snapshot_snapshots_and_training_goes_on(tmp_path):
    proc, seen = _train_until_interrupted(tmp_path, "snapshot")
    try:
        seen += _read_until(proc, "Snapshotting solver state")
        after = _read_until(proc, ", loss = ")  # Caffe's Step only breaks on a stop
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert "Received SIGINT" in seen and "Snapshotting solver state" in seen, seen
    assert ", loss = " in after
    assert any(s.endswith(".solverstate") for s in os.listdir(tmp_path / "snaps"))


def test_train_refuses_python_layers_when_asked(capsys):
    from caffe.tools.cli import main

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = main(["train", "-solver", "examples/mnist/lenet_solver.prototxt",
                   "-no_python_layers"])
    finally:
        os.chdir(cwd)
    assert rc == 1
    assert "allow_python_layers=False" in capsys.readouterr().err


def test_parse_log_writes_caffes_csv_tables(tmp_path, capsys):
    (tmp_path / "lenet.log").write_text(BVLC_LOG)
    out = tmp_path / "out"
    out.mkdir()
    rc, printed, err = caffe_cli(capsys, "parse_log", str(tmp_path / "lenet.log"), str(out),
                                 "--verbose")
    assert rc == 0, err
    assert "lenet.log.train (2 rows)" in printed
    # what Caffe's parse_log.py writes for this log: seconds from the Solving line (here
    # across New Year, where Caffe's script would count back), the last rate read before the
    # row (the first row takes the second's), floats, CRLF; the second test net's row stays
    # incomplete (it has fewer columns than the first), so it is not written
    train = (out / "lenet.log.train").read_bytes().decode()
    assert train == ("NumIters,Seconds,LearningRate,loss\r\n0.0,0.3,0.01,2.4\r\n"
                     "100.0,2.0,0.01,0.25\r\n")
    test = (out / "lenet.log.test").read_bytes().decode()
    assert test == ("NumIters,Seconds,LearningRate,accuracy,loss\r\n0.0,0.2,0.005,0.1,2.3\r\n"
                    "200.0,3.0,0.005,0.97,0.1\r\n")


def test_parse_log_reads_our_training_log(workdir, capsys):
    rc, _, err = caffe_cli(capsys, "train", "-solver", "solver.prototxt")
    (workdir / "train.log").write_text(err)
    rc, _, err = caffe_cli(capsys, "parse_log", "train.log", ".", "-delimiter", "\t")
    assert rc == 0, err
    rows = [line.split("\t") for line in (workdir / "train.log.test").read_text().splitlines()]
    assert rows[0][:3] == ["NumIters", "Seconds", "LearningRate"] and "loss" in rows[0]
    assert len(rows) > 2 and all(len(r) == len(rows[0]) for r in rows)
    assert float(rows[1][1]) >= 0
    (workdir / "empty.log").write_text("nothing here\n")
    rc, _, err = caffe_cli(capsys, "parse_log", "empty.log", ".")
    assert rc == 1 and "no train or test net outputs" in err
    rc, _, err = caffe_cli(capsys, "parse_log", "train.log", "missing_dir")
    assert rc == 1 and "'missing_dir' does not exist" in err


def test_summarize_lists_layers_shapes_and_parameter_counts(workdir, capsys):
    rc, out, err = caffe_cli(capsys, "summarize", "net.prototxt", "--phase", "TRAIN")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["name", "type", "param", "bottom", "top", "args", "top",
                                "shapes", "params"]
    assert lines[-1].endswith("phase TRAIN") and " parameter values " in lines[-1]
    assert not any("_split" in line for line in lines)


def test_summarize_falls_back_to_the_prototxt(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "0")  # the suite's default hides warnings
    (tmp_path / "n.prototxt").write_text("""
layer { name: "d" type: "Data" top: "x" top: "y" include { phase: TRAIN }
  data_param { source: "missing_lmdb" batch_size: 4 } }
layer { name: "d" type: "Data" top: "x" top: "y" include { phase: TEST }
  data_param { source: "missing_lmdb" batch_size: 4 } }
layer { name: "c" type: "Convolution" bottom: "x" top: "c"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 group: 2 } }
layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { global_pooling: true } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "p" bottom: "y" top: "loss"
  loss_weight: 0.5 }
""")
    rc, out, err = caffe_cli(capsys, "summarize", str(tmp_path / "n.prototxt"))
    assert rc == 0 and "cannot build the net in TEST" in err
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows[1:]] == ["d", "d", "c", "p", "loss"]  # every phase's layers
    assert rows[3] == ["c", "Convolution", "(-,", "x2", "Dx0)", "x", "->", "c", "3/2+1", "8/2"]
    assert rows[4][-2:] == ["global", "MAX"]
    assert rows[5][-3:] == ["0.5", "*", "loss!"]
    rc, out, _ = caffe_cli(capsys, "summarize", str(tmp_path / "n.prototxt"), "--phase",
                           "TRAIN", "--no-build")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["d", "c", "p", "loss"]


def test_gpu_all_without_a_device_says_it_runs_on_the_cpu(caplog):
    import logging

    import torch

    from caffe.tools.train import gpu_ids

    if torch.cuda.is_available():
        assert gpu_ids("all") == list(range(torch.cuda.device_count()))
        return
    logger = logging.getLogger("caffe")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="caffe"):
            assert gpu_ids("all") == []
    finally:
        logger.removeHandler(caplog.handler)
    assert "-gpu all: PyTorch sees no CUDA device; running on the CPU" in caplog.text
