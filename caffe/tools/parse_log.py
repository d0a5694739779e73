"""``caffe parse_log``: a training log as two CSV tables, with the rows and values Caffe's
``tools/extra/parse_log.py`` writes.

``caffe parse_log train.log out/`` writes ``out/train.log.train`` and ``out/train.log.test``:
columns ``NumIters,Seconds,LearningRate`` and then the net outputs in the order they first
appear, numbers as Python floats (``100.0``), rows ended by CRLF (the csv module's Excel
dialect). Caffe's rules, kept: lines are read from the one after ``Solving`` (``Seconds`` counts
from it); the iteration is the last ``Iteration N`` seen; a ``Train/Test net output #k: name =
v`` line adds ``name`` to the row of that iteration, starting a new row when the iteration
changes; a row is complete, and written, once it has as many columns as the first row (the
first row when the next one starts; a last incomplete row is dropped); ``LearningRate`` is the
last ``lr = x`` read before the row began (Caffe logs an iteration's rate after its outputs, so
train rows show the previous display's rate), and the first row takes the second's. A second
test net's outputs go to the columns of the same names. A table with no rows is not written.
Unlike Caffe's script, a log that runs over New Year's Eve counts on, and a log without a
``Solving`` line counts from its first stamped line.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from collections.abc import Iterable

from caffe.errors import CaffeError
from caffe.tools.training_log import seconds_since, stamp, training_start

COMMAND = "parse_log"
HELP = "write a training log's train and test outputs as CSV tables (log.train, log.test)"

Row = dict[str, float]

_ITERATION = re.compile(r"Iteration (\d+)")
_OUTPUT = {kind: re.compile(kind + r" net output #\d+: (\S+) = ([.\deE+-]+)")
           for kind in ("Train", "Test")}
_LR = re.compile(r"lr = ([-+]?\d*\.?\d+(?:[eE]?[-+]?\d+)?)")


def tables(lines: Iterable[str]) -> tuple[list[Row], list[Row]]:
    """The train rows and the test rows of a log (see the module text)."""
    lines = list(lines)
    first, start = training_start(lines)
    lines = lines[first:]
    seconds = (list(seconds_since(start, [stamp(line) for line in lines])) if start is not None
               else [float("nan")] * len(lines))
    iteration = None
    rate = float("nan")
    done: dict[str, list[Row]] = {"Train": [], "Test": []}
    rows: dict[str, Row | None] = {"Train": None, "Test": None}
    for line, second in zip(lines, seconds):
        m = _ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration is None:
            continue
        m = _LR.search(line)
        if m:
            rate = float(m.group(1))
        for kind, pattern in _OUTPUT.items():
            rows[kind] = _add_output(pattern.search(line), rows[kind], done[kind], iteration,
                                     second, rate)
    for table in done.values():
        if len(table) > 1:
            table[0]["LearningRate"] = table[1]["LearningRate"]
    return done["Train"], done["Test"]


def _add_output(m: re.Match | None, row: Row | None, table: list[Row], iteration: float,
                second: float, rate: float) -> Row | None:
    """The row being filled after one line (``m``: its output, if any): a new row when the
    iteration changed (the old one goes to ``table``), none once the row is complete."""
    if m:
        try:
            value = float(m.group(2))
        except ValueError:  # digits and signs that make no number
            return row
        if row is None or row["NumIters"] != iteration:
            if row is not None:
                table.append(row)
            row = {"NumIters": iteration, "Seconds": second, "LearningRate": rate}
        row[m.group(1)] = value
    if row is not None and table and len(row) == len(table[0]):
        table.append(row)
        return None
    return row


def write_table(path: str, rows: list[Row], delimiter: str) -> None:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), dialect="excel",
                                delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logfile_path", help="a training log (the stderr of caffe train)")
    parser.add_argument("output_dir", help="the folder for <log name>.train and .test")
    parser.add_argument("--delimiter", default=",", help="the column separator (default ',')")
    parser.add_argument("--verbose", action="store_true", help="say which files were written")


def run(args: argparse.Namespace) -> int:
    if len(args.delimiter) != 1:
        raise CaffeError(f"--delimiter must be one character, got '{args.delimiter}'")
    try:
        with open(args.logfile_path, encoding="utf-8", errors="replace") as f:
            train, test = tables(f)
    except OSError as e:
        raise CaffeError(f"cannot read the log '{args.logfile_path}': {e.strerror}") from None
    if not (train or test):
        raise CaffeError(f"no train or test net outputs found in '{args.logfile_path}': "
                         "expected lines such as 'Train net output #0: loss = 0.3' or "
                         "'Test net output #0: accuracy = 0.9'")
    if not os.path.isdir(args.output_dir):
        raise CaffeError(f"the output folder '{args.output_dir}' does not exist")
    name = os.path.basename(args.logfile_path)
    for suffix, rows in ((".train", train), (".test", test)):
        path = os.path.join(args.output_dir, name + suffix)
        if rows:
            write_table(path, rows, args.delimiter)
        if args.verbose:
            print(f"Wrote {path} ({len(rows)} rows)" if rows
                  else f"Not writing {path}: no {suffix[1:]} outputs in the log")
    return 0
