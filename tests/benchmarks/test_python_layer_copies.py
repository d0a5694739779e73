"""The copy benchmark runs, and on the CPU neither kind of Python layer copies anything
(NumPy views share the tensors' memory)."""

from benchmarks.python_layer_copies import main


def test_cpu_python_layers_are_zero_copy():
    res = main(["--layers", "1", "--iters", "1"])
    assert res == {"NumpyScale": 0.0, "TorchScale": 0.0}
