"""Prototxt parsing with better errors, and a tolerant mode for nets from Caffe forks.

Strict (the default): an unknown field is an error naming the file, line, column, field and
the layer it sits in. Tolerant (``strict=False``): each unknown field is cut out with one
warning, and an unknown ``*_param { ... }`` block is kept as a dict for the layer it belongs to
(``layer.extra_params['upsample_param'] == {'scale': 2}``), so user-registered fork layers can
read their settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import text_format

from caffe._common import LOG
from caffe.errors import ProtoError
from caffe.proto import caffe_pb2

_TOKEN = re.compile(r"""
    (?P<ws>\s+) | (?P<comment>\#[^\n]*) | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*') |
    (?P<punct>[{}:<>\[\],;]) | (?P<word>[^\s{}:<>\[\],;"'#]+)
""", re.VERBOSE)
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')
_MAX_CUTS = 10000


@dataclass
class _Tok:
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Tok]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        out.append(_Tok(kind, m.group(), m.start(), m.end()))
    return out


def _offset(text: str, line: int, col: int) -> int:
    """Character offset of 1-based ``line`` and ``col``."""
    pos = 0
    for _ in range(line - 1):
        pos = text.index("\n", pos) + 1
    return pos + col - 1


def _unquote(s: str) -> str:
    return s[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


def _scalar(tok: _Tok):
    if tok.kind == "str":
        return _unquote(tok.text)
    for conv in (int, float):
        try:
            return conv(tok.text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(tok.text, tok.text)


def _parse_block(toks: list[_Tok], i: int) -> tuple[dict, int]:
    """Parse ``{ ... }`` starting at toks[i] == '{'; return (dict, index after '}')."""
    result: dict = {}
    i += 1
    while i < len(toks) and toks[i].text != "}":
        key = toks[i].text
        i += 1
        if i < len(toks) and toks[i].text == ":":
            i += 1
        if i < len(toks) and toks[i].text == "{":
            value, i = _parse_block(toks, i)
        else:
            value = _scalar(toks[i])
            i += 1
        if key in result:
            if not isinstance(result[key], list):
                result[key] = [result[key]]
            result[key].append(value)
        else:
            result[key] = value
        if i < len(toks) and toks[i].text in (",", ";"):
            i += 1
    return result, i + 1


def _field_span(toks: list[_Tok], i: int) -> tuple[int, int, object]:
    """The text span of the field whose name is toks[i], and its value (dict or scalar)."""
    j = i + 1
    if j < len(toks) and toks[j].text == ":":
        j += 1
    if j < len(toks) and toks[j].text == "{":
        value, k = _parse_block(toks, j)
        return toks[i].start, toks[k - 1].end, value
    return toks[i].start, toks[j].end, _scalar(toks[j])


def enclosing_layers(text: str) -> list[tuple[int, int, str]]:
    """(start offset, end offset, name) of every top-level ``layer``/``layers`` block."""
    toks = _tokens(text)
    out = []
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
        elif depth == 0 and t.text in ("layer", "layers"):
            j = i + 1
            if j < len(toks) and toks[j].text == ":":
                j += 1
            if j < len(toks) and toks[j].text == "{":
                _, k = _parse_block(toks, j)
                name = ""
                d = 0
                for m in range(j + 1, k - 1):
                    if toks[m].text == "{":
                        d += 1
                    elif toks[m].text == "}":
                        d -= 1
                    elif d == 0 and toks[m].text == "name" and m + 2 < k:
                        name = _scalar(toks[m + 2]) if toks[m + 1].text == ":" else ""
                        break
                out.append((t.start, toks[k - 1].end, str(name)))
                i = k
                continue
        i += 1
    return out


def _layer_at(text: str, offset: int) -> tuple[int, str] | None:
    for index, (start, end, name) in enumerate(enclosing_layers(text)):
        if start <= offset < end:
            return index, name
    return None


def parse_net_text(text: str, source: str, strict: bool = True
                   ) -> tuple[caffe_pb2.NetParameter, dict[int, dict]]:
    """Parse a NetParameter prototxt. Returns the message and, in tolerant mode, the unknown
    fields of each layer (by layer index) as dicts."""
    extras: dict[int, dict] = {}
    for _ in range(_MAX_CUTS):
        param = caffe_pb2.NetParameter()
        try:
            text_format.Merge(text, param)
            return param, extras
        except text_format.ParseError as e:
            line, col = e.GetLine(), e.GetColumn()
            detail = str(e).split(" : ", 1)[-1]
            m = _UNKNOWN_FIELD.search(detail)
            where = f"{source}:{line}:{col}" if line is not None else source
            offset = _offset(text, line, col) if line is not None else None
            layer = _layer_at(text, offset) if offset is not None else None
            in_layer = f" in layer '{layer[1]}'" if layer and layer[1] else ""
            if strict or not m or offset is None:
                hint = (" (to skip fields unknown to BVLC Caffe, load with strict=False)"
                        if m else "")
                raise ProtoError(f"{where}: cannot parse NetParameter{in_layer}: {detail}{hint}"
                                 ) from None
            toks = _tokens(text)
            idx = next((k for k, t in enumerate(toks) if t.start == offset), None)
            if idx is None:
                raise ProtoError(f"{where}: cannot parse NetParameter{in_layer}: {detail}"
                                 ) from None
            start, end, value = _field_span(toks, idx)
            LOG.warning("%s: skipping field '%s' unknown to Caffe%s", where, m.group(1),
                        in_layer)
            if layer is not None:
                extras.setdefault(layer[0], {})[m.group(1)] = value
            text = text[:start] + " " * (end - start) + text[end:]
    raise ProtoError(f"{source}: too many unknown fields")
