"""Exceptions raised by neocaffe. Every one derives from :class:`CaffeError`, and most also from
the builtin type a Python user would expect (``ValueError``, ``KeyError``, ``IOError``...), so
existing ``except ValueError`` code keeps working. Messages say who, what was expected, what was
received, and how to fix it."""

from __future__ import annotations


class CaffeError(Exception):
    """Base class of every error neocaffe raises on purpose."""


class ProtoError(CaffeError, ValueError):
    """A prototxt, caffemodel, binaryproto or solverstate could not be parsed or is invalid."""


class FileFormatError(ProtoError, OSError, RuntimeError):
    """A file is missing, truncated, corrupt, or of the wrong kind. The message names the file.
    (Also a RuntimeError: pycaffe raised that for a file it could not open.)"""


class NetDefinitionError(CaffeError, ValueError):
    """The net description is inconsistent (unknown bottom, duplicate top, bad state rule...)."""


class UnknownNameError(NetDefinitionError, KeyError):
    """A name the net does not have (a layer, a blob): a KeyError, and a ValueError as
    pycaffe's lookups by ``list.index`` raised."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownLayerTypeError(UnknownNameError):
    """A layer type is not registered. The message lists the known types."""


class LayerSetupError(CaffeError, ValueError):
    """A layer rejected its parameters or the shapes of its bottoms."""


class BlobCountError(LayerSetupError):
    """A layer got the wrong number of bottom or top blobs."""


class ShapeMismatchError(CaffeError, ValueError):
    """Two shapes that must agree do not (weights vs. layer, input vs. blob...)."""


class PythonLayerError(CaffeError, RuntimeError):
    """User code in a Python layer raised, or its module/class could not be loaded."""


class SolverError(CaffeError, ValueError):
    """The solver description or a solver state is invalid."""


class GradientCheckError(CaffeError, AssertionError):
    """A layer's backward disagrees with finite differences of its forward."""


class NumericalError(CaffeError, FloatingPointError):
    """A layer produced NaN or Inf (raised when ``net.check_nan`` is on)."""


#: what a CUDA device-side assert most often means in a Caffe net, and how to find the layer
DEVICE_ASSERT_HINT = (
    "A device-side assert in a Caffe net is most often a label or index out of range on the "
    "GPU (a loss or Accuracy label, a BatchReindex index), which is not checked there by "
    "default because the check waits for the device; the GPU reports it later, so the layer "
    "named with it may not be the one at fault. Run again with the environment variable "
    "CAFFE_CHECK_LABELS=1 (or on the CPU) to get an error naming the layer and the value.")


def with_device_hint(message: str) -> str:
    """``message`` followed by DEVICE_ASSERT_HINT when it reports a CUDA device-side assert."""
    return f"{message}\n{DEVICE_ASSERT_HINT}" if "device-side assert" in message else message


_COMBINED: dict[tuple[type, type], type] = {}


def also(error: CaffeError, kind: type[BaseException]) -> BaseException:
    """``error`` (the same message) as an instance of ``kind`` too, so that code written for
    pycaffe, which catches ``kind`` there (the exception a Python layer raised, which pycaffe
    passes through unchanged; pycaffe's own RuntimeError), still catches it. ``error`` itself
    when it already is one, or when the two classes cannot be combined."""
    if isinstance(error, kind):
        return error
    key = (type(error), kind)
    cls = _COMBINED.get(key)
    if cls is None:
        base = type(error)
        try:
            cls = type(base.__name__, (base, kind), {
                "__module__": base.__module__, "__qualname__": base.__qualname__,
                "__str__": base.__str__,
                # pickled (e.g. to another process) as the plain neocaffe error
                "__reduce__": lambda self: (base, self.args),
            })
        except TypeError:  # a layout conflict, or a class that takes no subclasses
            return error
        _COMBINED[key] = cls
    combined = cls.__new__(cls, *error.args)
    combined.args = error.args
    combined.__dict__.update(error.__dict__)
    return combined
