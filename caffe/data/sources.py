"""List files: the text files that name a data layer's inputs (HDF5 file lists, image lists,
R-CNN window files). Every entry keeps its line number for error messages."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from caffe._common import LOG
from caffe.errors import FileFormatError


@dataclass(frozen=True)
class ListEntry:
    """One entry of a list file: ``path``, an integer ``label`` (0 when absent) and the
    1-based ``line`` it came from."""

    path: str
    label: int
    line: int


def read_text_lines(source: str, what: str) -> list[str]:
    """The lines of the list file ``source`` (``what`` names it in errors)."""
    try:
        with open(source, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise FileFormatError(f"{what} '{source}' does not exist "
                              f"(working directory: {os.getcwd()})") from None
    except IsADirectoryError:
        raise FileFormatError(f"{what} '{source}' is a directory, not a list file") from None
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{what} '{source}' is not a UTF-8 text file (byte {e.start})"
                              ) from None
    except OSError as e:
        raise FileFormatError(f"cannot read {what} '{source}': {e.strerror}") from None


def read_path_list(source: str, what: str) -> list[ListEntry]:
    """Whitespace-separated paths (Caffe reads HDF5 lists token by token)."""
    entries = [ListEntry(token, 0, i) for i, line in enumerate(read_text_lines(source, what), 1)
               for token in line.split()]
    if not entries:
        raise FileFormatError(f"{what} '{source}' lists no files")
    return entries


_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def read_labeled_list(source: str, what: str, keep_blank: bool = False) -> list[ListEntry]:
    """``path label`` lines, read as Caffe reads them: split at the last space (so paths may
    contain spaces), the label read as C's ``atoi`` reads it (``3.0`` is 3, with a warning), a
    line without a space is a path with label 0. A label with no leading integer (which Caffe
    would read as 0) is an error. Blank lines are skipped, or with ``keep_blank`` kept as
    entries with an empty path (``convert_imageset`` numbers its keys by line, counting them,
    as Caffe)."""
    entries = []
    odd = ""
    for i, raw in enumerate(read_text_lines(source, what), 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            if keep_blank:
                entries.append(ListEntry("", 0, i))
            continue
        pos = line.rfind(" ")
        if pos < 0:
            entries.append(ListEntry(line, 0, i))
            continue
        path, token = line[:pos], line[pos + 1:]
        m = _LEADING_INT.match(token)
        if not m:
            raise FileFormatError(
                f"{what} '{source}' line {i}: the label '{token}' is not an integer (lines "
                "are 'path label', split at the last space)")
        label = int(m.group(1))
        if not odd and token.strip() != m.group(1):
            odd = f"line {i}: '{token}' is read as {label}"
        entries.append(ListEntry(path, label, i))
    if not any(e.path for e in entries):
        raise FileFormatError(f"{what} '{source}' is empty")
    if odd:
        LOG.warning("%s '%s': labels are read as C's atoi reads them, as in Caffe (%s)", what,
                    source, odd)
    return entries


def resolve(path: str, source: str) -> str:
    """``path`` as Caffe opens it (relative to the working directory); when nothing is there,
    the same path relative to the list file's folder, if that exists."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    beside = os.path.join(os.path.dirname(os.path.abspath(source)), path)
    return beside if os.path.exists(beside) else path
