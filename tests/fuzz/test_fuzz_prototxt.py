"""Fuzzing the prototxt readers: NetParameter text (strict and tolerant), the upgrades applied
on load, and SolverParameter text. Inputs are token soups over Caffe's field names and
mutations of real prototxts; each must parse or raise a CaffeError."""

from __future__ import annotations

import glob
import os

from fuzzkit import check_outcome, fuzz_settings, write_bytes
from hypothesis import example, given
from hypothesis import strategies as st

from caffe.proto import caffe_pb2, files, tolerant, upgrade
from caffe.solvers.solver import read_solver_param

LEGACY = os.path.join(os.path.dirname(__file__), "..", "data", "legacy")


def _field_names() -> list[str]:
    names: set[str] = set()
    todo = [caffe_pb2.NetParameter.DESCRIPTOR, caffe_pb2.SolverParameter.DESCRIPTOR]
    seen = set()
    while todo:
        d = todo.pop()
        if d.full_name in seen:
            continue
        seen.add(d.full_name)
        for f in d.fields:
            names.add(f.name)
            if f.message_type is not None:
                todo.append(f.message_type)
            if f.enum_type is not None:
                names.update(v.name for v in f.enum_type.values)
    return sorted(names)


NAMES = _field_names()
WORDS = st.sampled_from(NAMES + ["layer", "layers", "type", "name", "Convolution", "conv",
                                 "padding", "foo_param", "unknown", "true", "false"])
NUMBERS = st.sampled_from(["0", "-1", "1", "3", "2147483648", "-2147483649", "1e999", "nan",
                           "-inf", "0x7f", "0.5", "-0", "1e-400", "99999999999999999999",
                           "1.5f", "07", ".5"])
STRINGS = st.sampled_from(['"data"', '"conv1"', "'x'", '"\\x"', '"\\u12"', '"\\777"',
                           '"\\\\"', '"a\\"b"', '""', '"\\', "'", '"\n"'])
PUNCT = st.sampled_from(["{", "}", ":", "<", ">", "[", "]", ",", ";", "\n", "#c\n", "\r",
                         " ", "\t"])
TOKEN = st.one_of(WORDS, NUMBERS, STRINGS, PUNCT, st.text(max_size=3))
SOUP = st.lists(TOKEN, max_size=60).map(" ".join)


def _seed_texts() -> list[str]:
    out = []
    for path in sorted(glob.glob(os.path.join(LEGACY, "**", "*.prototxt"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            out.append(f.read())
    out.append("layers { layer { name: 'c' type: 'conv' num_output: 2 kernelsize: 3 } "
               "bottom: 'data' top: 'c' }  input: 'data' input_dim: 1 input_dim: 1 "
               "input_dim: 4 input_dim: 4")
    out.append("layers { name: 'p' type: POOLING bottom: 'data' top: 'p' } input: 'data' "
               "input_shape { dim: 1 dim: 2 }")
    out.append("layer { name: 'x' type: 'Upsample' upsample_param { scale: 2 } } "
               "layer { name: 'b' type: 'BatchNorm' param {} param {} param {} }")
    return out


SEEDS = _seed_texts()


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    toks = [m.group() for m in tolerant._TOKEN.finditer(text)] or [text]
    for kind, pos, tok in edits:
        pos %= max(1, len(toks))
        if kind == 0:
            del toks[pos:pos + 1]
        elif kind == 1:
            toks[pos:pos] = [tok]
        elif kind == 2:
            toks[pos:pos + 1] = [tok]
        else:
            toks[pos:pos] = toks[pos:pos + 1 + len(tok) % 8]
    return "".join(toks)


MUTATED = st.builds(_mutate, st.sampled_from(SEEDS),
                    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), TOKEN),
                             min_size=1, max_size=6))
NET_TEXT = st.one_of(SOUP, MUTATED)


def _load_net_text(text: str, strict: bool) -> None:
    param, _ = tolerant.parse_net_text(text, "<fuzz>", strict)
    upgrade.upgrade_net_as_needed(param, "<fuzz>")


@fuzz_settings(400)
@given(NET_TEXT, st.booleans())
# found by this target: a missing value, an unclosed block, deep nesting, a bad escape
@example("ABSVAL", False)
@example("ABSVAL { ABSVAL", False)
@example('layer { name: "q" ' + "a { " * 3000, True)
@example('x: "\\x"', False)
def test_net_text_parses_or_raises_caffe_error(text, strict):
    check_outcome(lambda: _load_net_text(text, strict))


@fuzz_settings(150)
@given(st.one_of(NET_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=200),
                 st.builds(lambda t: t.encode("utf-8") + b"\x00\x08", NET_TEXT)))
def test_net_file_reader(data):
    path = write_bytes("net.prototxt", data)
    check_outcome(lambda: upgrade.read_net_param(path, strict=False))
    check_outcome(lambda: upgrade.read_net_param(path))


SOLVER_SEED = open(os.path.join(LEGACY, "lenet_solver.prototxt"), encoding="utf-8").read()
SOLVER_TEXT = st.one_of(
    SOUP,
    st.builds(_mutate, st.just(SOLVER_SEED + "\nsolver_type: ADAM\n"),
              st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), TOKEN),
                       min_size=1, max_size=6)))


@fuzz_settings(200)
@given(SOLVER_TEXT)
def test_solver_text(text):
    check_outcome(lambda: upgrade.upgrade_solver_as_needed(
        files.parse_text(text, caffe_pb2.SolverParameter(), "<fuzz>"), "<fuzz>"))
    path = write_bytes("solver.prototxt", text.encode("utf-8", "surrogatepass"))
    check_outcome(lambda: read_solver_param(path))


def test_many_unknown_fields_parse_in_linear_time():
    """Found while fuzzing: tolerant parsing re-parsed the whole net after each unknown field
    it cut out (a 76 KB net with 1000 unknown fields took 72 s). Now each layer is re-parsed
    on its own."""
    import time

    text = "".join(f'layer {{ name: "l{i}" type: "ReLU" bottom: "x" top: "x" '
                   f"foo_param {{ a: {i} }} }}\n" for i in range(2000))
    start = time.perf_counter()
    param, extras = tolerant.parse_net_text(text, "<many>", strict=False)
    assert time.perf_counter() - start < 10
    assert len(param.layer) == 2000 and extras[1999] == {"foo_param": {"a": 1999}}
