"""Prototxt parsing with better errors, and a tolerant mode for nets from Caffe forks.

Strict (the default): an unknown field is an error naming the file, line, column, field and
the layer it sits in. Tolerant (``strict=False``): each unknown field is cut out with one
warning, and an unknown ``*_param { ... }`` block is kept as a dict for the layer it belongs to
(``layer.extra_params['upsample_param'] == {'scale': 2}``), so user-registered fork layers can
read their settings.
"""

from __future__ import annotations

import re
import warnings
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


class _Malformed(Exception):
    """The text of an unknown field cannot be cut out (a missing value, an unclosed block)."""


_MAX_DEPTH = 64
_CLOSING = {"{": "}", "<": ">"}


def _unquote(s: str) -> str:
    # Python only warns about unknown escapes (``\ ``, ``\777``): refuse them like a
    # malformed one instead of guessing what the file meant
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return s[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError as e:
            raise _Malformed(f"bad escape sequence in the string {s} ({e.reason})") from None
        except DeprecationWarning as e:
            raise _Malformed(f"bad escape sequence in the string {s} ({e})") from None


def _scalar(tok: _Tok):
    if tok.kind == "punct":
        raise _Malformed(f"expected a value, found '{tok.text}'")
    if tok.kind == "str":
        return _unquote(tok.text)
    for conv in (int, float):
        try:
            return conv(tok.text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(tok.text, tok.text)


def _put(block: dict, key: str, value) -> None:
    """Set ``block[key]``; a repeated key collects its values in a list."""
    if key not in block:
        block[key] = value
    elif isinstance(block[key], list):
        block[key].append(value)
    else:
        block[key] = [block[key], value]


def _value(toks: list[_Tok], i: int, depth: int = 0) -> tuple[object, int]:
    """The value starting at toks[i] (a scalar, a ``{...}`` or ``<...>`` block as a dict, or a
    ``[...]`` list) and the index after it. Raises _Malformed when it is not well-formed."""
    if i >= len(toks):
        raise _Malformed("the text ends where a value is expected")
    if depth > _MAX_DEPTH:
        raise _Malformed(f"blocks are nested more than {_MAX_DEPTH} levels deep")
    opening = toks[i].text
    if opening in _CLOSING:
        block: dict = {}
        i += 1
        while i < len(toks) and toks[i].text != _CLOSING[opening]:
            key = toks[i]
            if key.kind != "word":
                raise _Malformed(f"expected a field name, found '{key.text}'")
            i += 1
            if i < len(toks) and toks[i].text == ":":
                i += 1
            value, i = _value(toks, i, depth + 1)
            _put(block, key.text, value)
            if i < len(toks) and toks[i].text in (",", ";"):
                i += 1
        if i >= len(toks):
            raise _Malformed(f"a '{opening}' is never closed")
        return block, i + 1
    if opening == "[":
        items = []
        i += 1
        while i < len(toks) and toks[i].text != "]":
            value, i = _value(toks, i, depth + 1)
            items.append(value)
            if i < len(toks) and toks[i].text == ",":
                i += 1
        if i >= len(toks):
            raise _Malformed("a '[' is never closed")
        return items, i + 1
    return _scalar(toks[i]), i + 1


def _field_span(toks: list[_Tok], i: int) -> tuple[int, int, object]:
    """The text span of the field whose name is toks[i], and its value (dict or scalar)."""
    j = i + 1
    if j < len(toks) and toks[j].text == ":":
        j += 1
    value, k = _value(toks, j)
    return toks[i].start, toks[k - 1].end, value


def _block_end(toks: list[_Tok], j: int) -> int:
    """The index after the bracket that closes the one at toks[j] (the end of the text when it
    is never closed). Lax on purpose: it only locates layers for error messages."""
    depth = 0
    for k in range(j, len(toks)):
        if toks[k].text in _CLOSING:
            depth += 1
        elif toks[k].text in ("}", ">"):
            depth -= 1
            if depth == 0:
                return k + 1
    return len(toks)


def enclosing_layers(text: str) -> list[tuple[int, int, str, str]]:
    """(start offset, end offset, name, type) of every top-level ``layer``/``layers`` block;
    the type as written (a V1 enum word or a V2 string), "" when absent."""
    toks = _tokens(text)
    out = []
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text in _CLOSING:
            depth += 1
        elif t.text in ("}", ">"):
            depth -= 1
        elif depth == 0 and t.text in ("layer", "layers"):
            j = i + 1
            if j < len(toks) and toks[j].text == ":":
                j += 1
            if j < len(toks) and toks[j].text in _CLOSING:
                k = _block_end(toks, j)
                # name and type at depth 0, else a V0 layer's, in its inner 'layer'
                found: dict[tuple[str, int], str] = {}
                d = 0
                inner = False
                for m in range(j + 1, k - 1):
                    if toks[m].text in _CLOSING:
                        d += 1
                        if d == 1:
                            back = m - 2 if toks[m - 1].text == ":" else m - 1
                            inner = toks[back].text == "layer"
                    elif toks[m].text in ("}", ">"):
                        d -= 1
                    elif ((toks[m].text, d) not in found and (d == 0 or (d == 1 and inner))
                          and toks[m].text in ("name", "type") and m + 2 < k
                          and toks[m + 1].text == ":" and toks[m + 2].kind != "punct"):
                        try:
                            found[toks[m].text, d] = str(_scalar(toks[m + 2]))
                        except _Malformed:
                            found[toks[m].text, d] = toks[m + 2].text
                name, type_ = (found.get((f, 0), found.get((f, 1), "")) for f in ("name", "type"))
                out.append((t.start, toks[k - 1].end, name, type_))
                i = k
                continue
        i += 1
    return out


def _layer_at(text: str, offset: int) -> tuple[int, str, str] | None:
    """(index, name, type) of the layer block around ``offset``."""
    for index, (start, end, name, type_) in enumerate(enclosing_layers(text)):
        if start <= offset < end:
            return index, name, type_
    return None


def _unknown_type_note(layer: tuple[int, str, str] | None) -> str:
    """For a field unknown to Caffe in a layer whose type Caffe lacks too (a fork's layer):
    what else loading that net takes."""
    from caffe.registry import layer_type_list

    type_ = layer[2] if layer else ""
    if (not type_ or type_ in layer_type_list()
            or type_ in caffe_pb2.V1LayerParameter.LayerType.keys()):
        return ""
    return (f"; its type '{type_}' is not a BVLC Caffe type either: supply it with "
            f"@caffe.register_layer('{type_}'), which receives the unknown fields as "
            "layer.extra_params")


def _merge_cutting(text: str, param: caffe_pb2.NetParameter, source: str, strict: bool,
                   line0: int = 1, col0: int = 1) -> dict[int, dict]:
    """Merge ``text`` into ``param``, cutting out unknown fields unless ``strict``; returns the
    unknown fields by index of the layer block (in ``text``) they sat in. ``text`` starts at
    line ``line0``, column ``col0`` of ``source`` (for messages)."""
    extras: dict[int, dict] = {}
    for _ in range(_MAX_CUTS):
        piece = caffe_pb2.NetParameter()
        try:
            text_format.Merge(text, piece)
            param.MergeFrom(piece)
            return extras
        except text_format.ParseError as e:
            line, col = e.GetLine(), e.GetColumn()
            detail = str(e).split(" : ", 1)[-1]
            m = _UNKNOWN_FIELD.search(detail)
            where = source
            if line is not None:
                where = f"{source}:{line + line0 - 1}:{col + col0 - 1 if line == 1 else col}"
            offset = _offset(text, line, col) if line is not None else None
            layer = _layer_at(text, offset) if offset is not None else None
            in_layer = "" if not layer else (f" in layer '{layer[1]}'" if layer[1] else
                                             f" in layer #{layer[0]} (it has no name)")
            if strict or not m or offset is None:
                hint = (" (to skip fields unknown to BVLC Caffe, load with strict=False"
                        f"{_unknown_type_note(layer)})" if m else "")
                raise ProtoError(f"{where}: cannot parse NetParameter{in_layer}: {detail}{hint}"
                                 ) from None
            toks = _tokens(text)
            idx = next((k for k, t in enumerate(toks) if t.start == offset), None)
            if idx is None:
                raise ProtoError(f"{where}: cannot parse NetParameter{in_layer}: {detail}"
                                 ) from None
            try:
                start, end, value = _field_span(toks, idx)
            except _Malformed as bad:
                raise ProtoError(f"{where}: cannot parse NetParameter{in_layer}: "
                                 f"{detail.rstrip('.')}; the "
                                 f"unknown field cannot be skipped: {bad}") from None
            LOG.warning("%s: skipping field '%s' unknown to Caffe%s", where, m.group(1),
                        in_layer)
            if layer is not None:
                extras.setdefault(layer[0], {})[m.group(1)] = value
            text = text[:start] + " " * (end - start) + text[end:]
    raise ProtoError(f"{source}: too many unknown fields")


def _top_level_fields(toks: list[_Tok]) -> list[tuple[int, int, str]] | None:
    """(first token, token after the end, field name) of every top-level field, or None when
    the text is not well-formed at the top level."""
    fields = []
    i = 0
    while i < len(toks):
        if toks[i].kind != "word":
            return None
        j = i + 1
        if j < len(toks) and toks[j].text == ":":
            j += 1
        try:
            _, k = _value(toks, j)
        except _Malformed:
            return None
        if k < len(toks) and toks[k].text in (",", ";"):
            k += 1
        fields.append((i, k, toks[i].text))
        i = k
    return fields


def parse_net_text(text: str, source: str, strict: bool = True
                   ) -> tuple[caffe_pb2.NetParameter, dict[int, dict]]:
    """Parse a NetParameter prototxt. Returns the message and, in tolerant mode, the unknown
    fields of each layer (by layer index) as dicts.

    In tolerant mode each top-level field (each layer) is parsed on its own, so that cutting
    out an unknown field costs a re-parse of its layer, not of the whole net."""
    param = caffe_pb2.NetParameter()
    try:
        text_format.Merge(text, param)
        return param, {}
    except text_format.ParseError:
        pass
    toks = _tokens(text) if not strict else []
    fields = _top_level_fields(toks) if not strict else None
    if fields is None:
        param = caffe_pb2.NetParameter()
        return param, _merge_cutting(text, param, source, strict)
    param = caffe_pb2.NetParameter()
    extras: dict[int, dict] = {}
    layers = 0
    line, line_start = 1, 0
    for first, after, name in fields:
        start, end = toks[first].start, toks[after - 1].end
        line += text.count("\n", line_start, start)
        line_start = text.rfind("\n", line_start, start) + 1 or line_start
        found = _merge_cutting(text[start:end], param, source, strict, line,
                               start - line_start + 1)
        if name in ("layer", "layers"):
            if found:
                extras[layers] = found[0]
            layers += 1
    return param, extras
