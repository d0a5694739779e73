"""Reading and writing Caffe's protobuf files with errors that name the file and the place.

Every reader here treats its input as untrusted: a syntax error gives file, line and column; a
truncated or corrupt binary file gives the file and what was expected; nothing is executed.
Writers go through a temporary file and a rename, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
import re
import tempfile

from google.protobuf import message as pb_message
from google.protobuf import text_format

from caffe._common import LOG
from caffe.errors import FileFormatError, ProtoError


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileFormatError(f"{what} file '{path}' does not exist") from None
    except IsADirectoryError:
        raise FileFormatError(f"{what} file '{path}' is a directory, not a file") from None
    except OSError as e:
        raise FileFormatError(f"cannot read {what} file '{path}': {e.strerror}") from None


def parse_text(text: str, msg: pb_message.Message, source: str = "<string>",
               allow_unknown: bool = False) -> pb_message.Message:
    """Merge prototxt ``text`` into ``msg``. Syntax errors name ``source``, line and column."""
    try:
        text_format.Merge(text, msg, allow_unknown_field=allow_unknown)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        detail = str(e)
        # protobuf prefixes "line:col : " to its message; keep only the explanation
        if line is not None and detail.startswith(f"{line}:"):
            detail = detail.split(" : ", 1)[-1]
        where = f"{source}:{line}:{col}" if line is not None else source
        raise ProtoError(f"{where}: cannot parse {msg.DESCRIPTOR.name}: {detail}") from None
    return msg


def _parse_text_bytes(data: bytes, msg: pb_message.Message, path: str,
                      allow_unknown: bool = False):
    """Parse ``data`` as a text-format ``msg``. Bytes that are not UTF-8 (a Latin-1 or GBK
    comment, which Caffe's C++ parser skips unread) become U+FFFD, with a warning; a file that
    does not parse then is named as possibly binary."""
    try:
        return parse_text(data.decode("utf-8"), msg, path, allow_unknown)
    except UnicodeDecodeError as e:
        bad = e.start
    msg.Clear()
    try:
        parse_text(data.decode("utf-8", "replace"), msg, path, allow_unknown)
    except ProtoError as e:
        raise FileFormatError(
            f"{path}: not a text {msg.DESCRIPTOR.name} (byte {bad} is not UTF-8, and the text "
            f"does not parse: {e}); is it a binary file?") from None
    warn_not_utf8(path, data, bad)
    return msg


def warn_not_utf8(path: str, data: bytes, bad: int) -> None:
    """Say that text ``data`` read from ``path`` had bytes that are not UTF-8 (the first at
    ``bad``), read as U+FFFD."""
    LOG.warning("%s: byte %d (line %d) is not UTF-8; such bytes were read as U+FFFD (harmless "
                "in a comment)", path, bad, data.count(b"\n", 0, bad) + 1)


def read_text(path: str, msg: pb_message.Message, allow_unknown: bool = False):
    """Read a text-format protobuf file into ``msg``."""
    return _parse_text_bytes(_read_bytes(path, msg.DESCRIPTOR.name), msg, path, allow_unknown)


def repair_text(msg: pb_message.Message, source: str = "<bytes>") -> None:
    """Decode, with replacement characters, the string fields of a parsed ``msg`` that are not
    valid UTF-8: protobuf hands them over as bytes (C++ Caffe accepts them), and bytes cannot
    be copied into another message's string field."""
    for field, value in msg.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for sub in value if field.is_repeated else (value,):
                repair_text(sub, source)
        elif field.type == field.TYPE_STRING and field.is_repeated:
            if any(isinstance(v, bytes) for v in value):
                items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                         for v in value]
                del value[:]
                value.extend(items)
                LOG.warning("%s: %s holds text that is not UTF-8", source, field.full_name)
        elif field.type == field.TYPE_STRING and isinstance(value, bytes):
            setattr(msg, field.name, value.decode("utf-8", "replace"))
            LOG.warning("%s: %s holds text that is not UTF-8", source, field.full_name)


def parse_binary(data: bytes, msg: pb_message.Message, source: str = "<bytes>"):
    """Parse wire-format ``data`` into ``msg``; a corrupt or truncated input names ``source``.
    Text fields that are not UTF-8 are decoded with replacement characters."""
    try:
        msg.ParseFromString(data)
    except (pb_message.DecodeError, ValueError, RuntimeError) as e:
        raise FileFormatError(
            f"{source}: not a valid binary {msg.DESCRIPTOR.name} ({len(data)} bytes; the file "
            f"is truncated, corrupt, or of another kind: {e})") from None
    repair_text(msg, source)
    return msg


def read_binary(path: str, msg: pb_message.Message):
    """Read a binary (wire-format) protobuf file into ``msg``."""
    return parse_binary(_read_bytes(path, msg.DESCRIPTOR.name), msg, path)


def read_text_or_binary(path: str, msg: pb_message.Message, allow_unknown: bool = False):
    """Read ``path`` as a prototxt, or as a binary protobuf when it is not valid text."""
    data = _read_bytes(path, msg.DESCRIPTOR.name)
    try:
        return parse_text(data.decode("utf-8"), msg, path, allow_unknown)
    except (UnicodeDecodeError, ProtoError) as e:
        text_error = e
    msg.Clear()
    try:
        return parse_binary(data, msg, path)
    except FileFormatError:
        if isinstance(text_error, ProtoError):
            raise text_error from None
    msg.Clear()  # not UTF-8 and not binary: text with stray bytes (in comments, usually)?
    try:
        return _parse_text_bytes(data, msg, path, allow_unknown)
    except FileFormatError:
        raise FileFormatError(
            f"{path}: neither a text nor a binary {msg.DESCRIPTOR.name}") from None


def _new_file_mode(path: str) -> int:
    """The permissions ``open(path, "w")`` would give: those of the file it replaces, else
    0o666 less the umask (mkstemp's temporary files are private, 0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed and
    renamed, so readers see the old file or the new one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_binary(path: str, msg: pb_message.Message) -> None:
    write_atomic(path, msg.SerializeToString())


#: a float field with an integral value: ``  lr_mult: 1.0``
_INTEGRAL_FLOAT = re.compile(r"^(\s*\w+: -?\d+)\.0$", re.MULTILINE)


def to_text(msg: pb_message.Message) -> str:
    """``msg`` in protobuf's text format as Caffe's C++ writes it (``DebugString``): integral
    floats without ``.0`` (``lr_mult: 1``), otherwise the shortest form of each value. String
    values are quoted, so they are never touched."""
    return _INTEGRAL_FLOAT.sub(r"\1", text_format.MessageToString(msg))


def write_text(path: str, msg: pb_message.Message) -> None:
    write_atomic(path, to_text(msg).encode("utf-8"))
