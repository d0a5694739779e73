"""Reading the training logs ``caffe train`` writes (neocaffe's or BVLC Caffe's glog lines), for
``caffe plot`` and ``caffe parse_log``.

Lines read: ``Iteration N, loss = x`` (the smoothed training loss), ``Iteration N, lr = x``,
``Iteration N, Testing net (#k)`` followed by ``Test net output #j: name = x [(* w = y loss)]``,
and ``Train net output #j: name = x``. Each value comes with its iteration and, where the line
starts with glog's ``I1126 12:00:00.123456`` stamp, its time.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))"
_TRAIN_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = " + _NUMBER)
_LR = re.compile(r"Iteration (\d+), lr = " + _NUMBER)
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"(Train|Test) net output #(\d+): (\S+) = " + _NUMBER + r"( \(\*)?")
_ITERATION = re.compile(r"Iteration (\d+)")
_STAMP = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) ")


@dataclass(frozen=True)
class Value:
    """One logged number. ``kind``: 'loss' (the smoothed training loss), 'lr', 'train' or
    'test' (a net output: ``output`` is its number #k, ``test_net`` says which test net,
    ``is_loss`` whether it carries a loss weight). ``time``: the line's glog stamp (month, day,
    clock; no year), or None."""

    kind: str
    iteration: int
    name: str
    value: float
    test_net: int = 0
    is_loss: bool = False
    time: datetime.datetime | None = None
    output: int = 0


def stamp(line: str) -> datetime.datetime | None:
    m = _STAMP.match(line)
    if not m:
        return None
    month, day, hour, minute, second, us = (int(g) for g in m.groups())
    try:  # glog writes no year: a leap year accepts every date
        return datetime.datetime(2000, month, day, hour, minute, second, us)
    except ValueError:
        return None


def scan(lines: Iterable[str]) -> Iterator[Value]:
    """The values of a training log, in the order they were logged."""
    it = test_it = test_net = 0
    for line in lines:
        m = _TRAIN_LOSS.search(line)
        if m:
            it = int(m.group(1))
            yield Value("loss", it, "loss", float(m.group(2)), time=stamp(line))
            continue
        m = _LR.search(line)
        if m:
            it = int(m.group(1))
            yield Value("lr", it, "lr", float(m.group(2)), time=stamp(line))
            continue
        m = _TESTING.search(line)
        if m:
            test_it, test_net = int(m.group(1)), int(m.group(2))
            continue
        m = _OUTPUT.search(line)
        if m:
            kind, output, name, value, is_loss = m.groups()
            train = kind == "Train"
            yield Value("train" if train else "test", it if train else test_it, name,
                        float(value), 0 if train else test_net, bool(is_loss), stamp(line),
                        int(output))
            continue
        m = _ITERATION.search(line)
        if m:
            it = int(m.group(1))


def training_start(lines: list[str]) -> tuple[int, datetime.datetime | None]:
    """(index of the first line after ``Solving``, its time stamp): where Caffe's log tools
    start reading and counting seconds. Without a ``Solving`` line: (0, the first stamp)."""
    solving = next((i for i, line in enumerate(lines) if "Solving" in line), None)
    if solving is not None:
        return solving + 1, stamp(lines[solving].strip())
    return 0, next((t for t in map(stamp, lines) if t is not None), None)


def seconds_since(start: datetime.datetime, times: Iterable[datetime.datetime | None]
                  ) -> Iterator[float]:
    """Seconds from ``start`` to each of ``times`` (in log order; a stamp earlier than the one
    before it is taken to be in the next year, as a log running over New Year's Eve)."""
    year = datetime.timedelta(days=366)
    shift = datetime.timedelta(0)
    last = start
    for t in times:
        if t is None:
            yield float("nan")
            continue
        while t + shift < last:
            shift += year
        last = t + shift
        yield (last - start).total_seconds()
