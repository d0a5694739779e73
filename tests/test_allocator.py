"""caffe.allocator: the process-wide malloc settings the caffe command applies."""

from __future__ import annotations

import platform
import resource
import sys

import pytest
import torch

from caffe import allocator
from caffe.tools import cli

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_default_env_keeps_the_c_library_settings(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "default")
    assert allocator.retain_freed_memory() is False


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.retain_freed_memory() is False


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_freed_buffers_are_reused_without_page_faults(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert allocator.retain_freed_memory() is True
    n = (48 << 20) // 4  # 48 MiB: above glibc's largest dynamic mmap threshold (32 MiB)

    def churn() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            t = torch.empty(n)
            t.fill_(1.0)  # touch every page
            del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    churn()  # the first round may grow the heap
    pages = n * 4 // 4096
    # mapped and unmapped each time, five buffers fault in 5 * 12288 pages; kept, about none
    assert churn() < pages // 4


def test_the_command_line_applies_it(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(allocator, "retain_freed_memory", lambda: calls.append(1) or True)
    cli.main(["device_query"])
    assert calls == [1]
