"""``caffe parse_log``: a training log as two CSV tables, as Caffe's ``tools/extra/parse_log.py``.

``caffe parse_log train.log out/`` writes ``out/train.log.train`` (one row per displayed
iteration: ``NumIters,Seconds,LearningRate`` and the train net's outputs) and
``out/train.log.test`` (one row per test: the test net's outputs; a second test net's columns
are named ``name#1``). ``Seconds`` counts from the ``Solving`` line (or the first stamped line);
``LearningRate`` is the rate logged at that iteration, else the latest one logged before it
(the first one for rows before any). A table with no rows is not written.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import os
from collections.abc import Iterable

from caffe.errors import CaffeError
from caffe.tools.training_log import scan, seconds_since, stamp

COMMAND = "parse_log"
HELP = "write a training log's train and test outputs as CSV tables (log.train, log.test)"

Row = dict[str, float]


def tables(lines: Iterable[str]) -> tuple[list[Row], list[Row]]:
    """The train rows and the test rows of a log (see the module text)."""
    lines = list(lines)
    solving = (stamp(line) for line in lines if "Solving " in line)
    start = (next((t for t in solving if t is not None), None)
             or next((t for t in map(stamp, lines) if t is not None), None))
    values = list(scan(lines))
    seconds = (list(seconds_since(start, [v.time for v in values])) if start is not None
               else [float("nan")] * len(values))
    lrs = sorted({v.iteration: v.value for v in values if v.kind == "lr"}.items())
    steps = [it for it, _ in lrs]

    def rate(it: int) -> float:
        if not lrs:
            return float("nan")
        return lrs[max(bisect.bisect_right(steps, it) - 1, 0)][1]

    out: dict[str, dict[int, Row]] = {"train": {}, "test": {}}
    for v, s in zip(values, seconds):
        if v.kind not in out:
            continue
        row = out[v.kind].setdefault(v.iteration, {
            "NumIters": v.iteration, "Seconds": s, "LearningRate": rate(v.iteration)})
        row[v.name if v.test_net == 0 else f"{v.name}#{v.test_net}"] = v.value
    return list(out["train"].values()), list(out["test"].values())


def write_table(path: str, rows: list[Row], delimiter: str) -> None:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else repr(float(value))


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
