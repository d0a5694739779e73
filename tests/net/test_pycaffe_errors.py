"""The exception types pycaffe scripts catch still catch neocaffe's errors: an exception from a
Python layer keeps its class (pycaffe let it through), and pycaffe's own RuntimeErrors and
ValueErrors stay those; neocaffe's errors add the layer's name and stay CaffeErrors."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pytest

import caffe
from caffe.errors import CaffeError, PythonLayerError, also

from nets import write

LAYERS = '''
import caffe


class EndOfData(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(2, 3)

    def forward(self, bottom, top):
        raise StopIteration("no more batches")


class NeedsKey(caffe.Layer):
    def setup(self, bottom, top):
        raise KeyError("mean_file")

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass
'''


@pytest.fixture
def module(tmp_path, monkeypatch) -> str:
    name = f"pyerr_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _python_net(module: str, cls: str) -> str:
    return write(f'layer {{ name: "src" type: "Python" top: "x" '
                 f'python_param {{ module: "{module}" layer: "{cls}" }} }}')


def test_a_python_layers_exception_keeps_its_class_and_gains_the_layers_name(module):
    net = caffe.Net(_python_net(module, "EndOfData"), caffe.TRAIN)
    with pytest.raises(StopIteration) as err:  # a data layer's end, as scripts catch it
        net.forward()
    assert isinstance(err.value, PythonLayerError)
    assert "Layer 'src' (Python" in str(err.value) and "no more batches" in str(err.value)
    assert isinstance(err.value.__cause__, StopIteration)
    # pickled (to another process) as the plain neocaffe error
    assert type(pickle.loads(pickle.dumps(err.value))) is PythonLayerError


def test_setup_and_import_errors_keep_their_classes(module):
    with pytest.raises(KeyError, match="Layer 'src'.*failed in setup: KeyError"):
        caffe.Net(_python_net(module, "NeedsKey"), caffe.TRAIN)
    with pytest.raises(ModuleNotFoundError, match="cannot import module"):
        caffe.Net(_python_net("no_such_module_here", "X"), caffe.TRAIN)
    with pytest.raises(AttributeError, match="has no class 'Missing'") as err:
        caffe.Net(_python_net(module, "Missing"), caffe.TRAIN)
    assert isinstance(err.value, PythonLayerError)


def test_pycaffes_own_error_types():
    path = write('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                 'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }')
    net = caffe.Net(network_file=path, phase=caffe.TEST)  # pycaffe's keyword names
    with pytest.raises(ValueError, match="no layer named 'nope'"):  # list.index in pycaffe
        net.forward(start="nope")
    with pytest.raises(KeyError):
        net.backward(end="nope")
    with pytest.raises(RuntimeError, match="does not exist"):  # "Could not open file"
        caffe.Net(path + ".missing", caffe.TEST)
    with pytest.raises(RuntimeError, match="needs a MemoryData layer"):
        net.set_input_arrays(np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.float32))


def test_set_input_arrays_errors_are_runtime_errors():
    net = caffe.Net(write('layer { name: "m" type: "MemoryData" top: "d" top: "l" '
                          'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }'),
                    caffe.TEST)
    with pytest.raises(RuntimeError) as err:
        net.set_input_arrays(np.zeros((3, 1, 2, 2), np.float32), np.zeros(3, np.float32))
    assert isinstance(err.value, CaffeError)


def test_batch_yields_padded_dicts():
    net = caffe.Net(write('layer { name: "in" type: "Input" top: "x" '
                          'input_param { shape { dim: 2 dim: 3 } } }'), caffe.TEST)
    batches = list(net._batch({"x": np.ones((5, 3), np.float32)}))
    assert len(batches) == 3 and all(set(b) == {"x"} for b in batches)
    np.testing.assert_array_equal(batches[-1]["x"], [[1, 1, 1], [0, 0, 0]])


def test_also_combines_classes_where_python_can():
    error = CaffeError("x")
    assert also(error, Exception) is error  # already one
    assert isinstance(also(error, OSError), OSError) and str(also(error, OSError)) == "x"
    # OSError's and UnicodeError's instance layouts conflict: the error stays as it is
    file_error = caffe.errors.FileFormatError("y")
    assert also(file_error, UnicodeDecodeError) is file_error
