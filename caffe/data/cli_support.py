"""Shared pieces of the dataset tools: gflags-style boolean flags and a progress bar."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from caffe._common import LOG


def add_bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """A boolean flag spelled as gflags accepts it: ``--name``, ``--name=true``,
    ``--name=false``, ``--noname`` (and ``-name...``, which the caffe command normalizes)."""
    parser.add_argument(f"--{name}", f"--{name}=true", f"--{name}=1", dest=name,
                        action="store_true", default=False, help=help)
    parser.add_argument(f"--no{name}", f"--{name}=false", f"--{name}=0", dest=name,
                        action="store_false", help=argparse.SUPPRESS)


class Progress:
    """A one-line progress bar on a terminal; elsewhere, a log line every ``every`` items
    (Caffe's "Processed N files.")."""

    def __init__(self, total: int | None, what: str, every: int = 1000,
                 stream: TextIO | None = None) -> None:
        self.total = total
        self.what = what
        self.every = every
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.count = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.tty:
            now = time.monotonic()
            if now - self._last >= 0.1 or self.count == self.total:
                self._last = now
                self._draw(now)
        elif self.count % self.every == 0:
            LOG.info("Processed %d %s.", self.count, self.what)

    def _draw(self, now: float) -> None:
        rate = self.count / max(now - self.start, 1e-9)
        if self.total:
            frac = min(1.0, self.count / self.total)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            text = f"\r{self.what}: {self.count}/{self.total} [{bar}] {rate:,.0f}/s"
        else:
            text = f"\r{self.what}: {self.count} {rate:,.0f}/s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
        elif self.count % self.every:
            LOG.info("Processed %d %s.", self.count, self.what)
