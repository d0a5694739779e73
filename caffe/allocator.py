"""Host allocator settings for a process that trains or times nets (the ``caffe`` command and
the benchmarks call this; a Python program may too).

A CPU pass frees and allocates the same large activation buffers every iteration. Under
glibc's default heuristics (an mmap threshold that moves with the sizes freed, and a heap top
trimmed back to the system once it exceeds twice that threshold), whether a buffer lands in
memory reused from the last iteration or in fresh pages depends on the order of the frees
before it. Fresh pages cost one page fault per 4 KiB on first touch: on a 2-core machine this
measured 0 to 460 faults per LeNet forward at batch 64 (up to 10 % of its time, varying from
run to run), and about 100 000 per ResNet-50 forward at batch 8 in a plain PyTorch program.
Keeping freed memory in the process makes every iteration reuse the previous one's pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from caffe._common import LOG

#: glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: heap allocations up to this size; larger ones are mapped (and unmapped when freed)
MMAP_THRESHOLD = 1 << 30
#: never trim the heap top (mallopt takes a C int)
TRIM_THRESHOLD = 2**31 - 1
#: set to "default" to leave the C library's allocator settings alone
ENV = "NEOCAFFE_MALLOC"


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the
    system: buffers up to 1 GiB come from the heap, and the heap is never trimmed. The
    process's resident size then stays at its peak, which a training loop reaches again every
    iteration anyway. Returns whether the settings took effect: False off Linux/glibc, or when
    the environment variable ``NEOCAFFE_MALLOC=default`` asks to keep the C library's own."""
    if os.environ.get(ENV, "").strip().lower() == "default" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
          and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if not ok:
        LOG.debug("mallopt refused the settings; the C library's allocator defaults stay")
    return ok
