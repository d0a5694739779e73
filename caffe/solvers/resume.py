"""The resume state saved with solver snapshots, so that training k iterations, snapshotting,
restoring in a new process with ``exact=True`` and training on gives the losses and weights of
an uninterrupted run: the random generators (``caffe._common.get_rng_state``) and the state of
the train net's layers (``Layer.state_dict``: data positions, shuffle orders, private
generators). A plain restore ignores it, as Caffe does: data layers start again at their first
batch.

BVLC Caffe's SolverState has no field for it, so it is kept where Caffe does not look: a JSON
sidecar ``<state file>.rng`` next to a binary ``.solverstate`` (written before the state file,
so a complete state file always has its sidecar), or the dataset ``resume_state`` (the same
JSON as bytes) in an HDF5 ``.solverstate.h5``. A snapshot without it (an older one, or one
written by Caffe) resumes as before, without exactness. The JSON is untrusted on reading:
its size, layout, types and ranges are checked, and a bad one raises FileFormatError naming
the file."""

from __future__ import annotations

import base64
import binascii
import json
import os

from caffe._common import LOG, get_rng_state, set_rng_state
from caffe.errors import CaffeError, SolverError
from caffe.net import Net
from caffe.solvers.solver import SolverFileError

FORMAT = "neocaffe-resume-state"
VERSION = 1
#: name of the dataset that holds the state in an HDF5 solver state
HDF5_DATASET = "resume_state"
#: the largest resume state read (shuffle orders of very large datasets fit easily)
MAX_BYTES = 1 << 30


def sidecar_path(state_file: str) -> str:
    """The file that holds the resume state of a binary solver state file."""
    return f"{state_file}.rng"


def encode(net: Net, iteration: int) -> bytes:
    """The resume state of ``net`` and of the random generators, as JSON bytes."""
    layers = []
    for index, layer in enumerate(net.layers):
        state = layer.state_dict()
        if state:
            layers.append({"index": index, "name": layer.name, "type": layer.type,
                           "state": state})
    doc = {"format": FORMAT, "version": VERSION, "iter": int(iteration),
           "rng": {k: base64.b64encode(v).decode("ascii") for k, v in get_rng_state().items()},
           "layers": layers}
    try:
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        bad = [f"'{x['name']}' ({x['type']})" for x in layers if not _jsonable(x["state"])]
        raise SolverError(
            f"cannot save the state of layer {', '.join(bad) or '?'}: state_dict() must return "
            "JSON-able values (dicts with string keys, lists, str, int, float, bool, None); "
            f"{e}") from None


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def read_sidecar(state_file: str) -> tuple[bytes, str] | None:
    """``(contents, path)`` of the sidecar of ``state_file``, or None when there is none."""
    path = sidecar_path(state_file)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SolverFileError(f"cannot read the resume state '{path}': {e.strerror}") from None
    if size > MAX_BYTES:
        raise SolverFileError(f"resume state '{path}' has {size} bytes, more than the "
                              f"{MAX_BYTES} a resume state may have")
    try:
        with open(path, "rb") as f:
            return f.read(MAX_BYTES + 1), path
    except OSError as e:
        raise SolverFileError(f"cannot read the resume state '{path}': {e.strerror}") from None


def log_restart(state_file: str) -> None:
    LOG.info("Restored %s as Caffe does: data layers start again at their first batch and "
             "random generators at the solver's seed (restore(..., exact=True) or caffe train "
             "-exact_resume continues exactly where the snapshot stopped)", state_file)


def log_missing(state_file: str) -> None:
    LOG.info("%s has no saved random state or data positions (an older snapshot): resuming "
             "with fresh ones, so the run will not repeat an uninterrupted one exactly",
             state_file)


def _fail(source: str, message: str) -> SolverFileError:
    return SolverFileError(f"resume state '{source}': {message}")


def _decode(data: bytes, source: str, iteration: int) -> tuple[dict[str, bytes], list[dict]]:
    if len(data) > MAX_BYTES:
        raise _fail(source, f"{len(data)} bytes, more than the {MAX_BYTES} allowed")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise _fail(source, f"not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _fail(source, f"not a resume state (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise _fail(source, f"version {doc.get('version')!r} is not supported (only "
                            f"{VERSION})")
    if set(doc) != {"format", "version", "iter", "rng", "layers"}:
        raise _fail(source, f"unexpected keys {sorted(doc)}")
    if doc["iter"] != iteration or type(doc["iter"]) is not int:
        raise _fail(source, f"it was saved at iteration {doc['iter']!r}, but the solver state "
                            f"is at iteration {iteration}: it belongs to another snapshot")
    rng = doc["rng"]
    if not isinstance(rng, dict) or not all(isinstance(v, str) for v in rng.values()):
        raise _fail(source, "\"rng\" must map generator names to base64 strings")
    try:
        states = {k: base64.b64decode(v, validate=True) for k, v in rng.items()}
    except (binascii.Error, ValueError) as e:
        raise _fail(source, f"bad base64 in \"rng\": {e}") from None
    layers = doc["layers"]
    if not isinstance(layers, list) or not all(
            isinstance(e, dict) and set(e) == {"index", "name", "type", "state"}
            and type(e["index"]) is int and isinstance(e["name"], str)
            and isinstance(e["type"], str) and isinstance(e["state"], dict) for e in layers):
        raise _fail(source, "\"layers\" must be a list of {index, name, type, state} entries")
    return states, layers


def apply(net: Net, data: bytes, source: str, iteration: int) -> None:
    """Restore the state ``encode`` saved (read from ``source``, for messages) into ``net``
    and the random generators."""
    states, entries = _decode(data, source, iteration)
    layers = net.layers
    for entry in entries:
        index, name, type_name = entry["index"], entry["name"], entry["type"]
        if not 0 <= index < len(layers) or layers[index].name != name \
                or layers[index].type != type_name:
            raise _fail(source, f"it holds the state of layer {index} '{name}' ({type_name}), "
                                f"which net '{net.name}' does not have at that index: it "
                                "belongs to another net")
    for entry in entries:
        layer = layers[entry["index"]]
        try:
            layer.load_state_dict(entry["state"])
        except (CaffeError, ValueError, TypeError, KeyError, OverflowError) as e:
            raise _fail(source, f"layer '{layer.name}' ({layer.type}): {e}") from None
    try:
        set_rng_state(states)
    except (ValueError, RuntimeError) as e:
        raise _fail(source, f"cannot restore the random generators: {e}") from None
    LOG.info("Restored the random state and the state of %d layer(s) from %s", len(entries),
             source)
