"""Keep freed tensor memory in the process instead of handing it back to the OS at every free.

The proofs run chains of elementwise operations on temporaries of tens of MB. glibc's malloc
maps every block above its mmap threshold (at most 32 MB by default) afresh and unmaps it when
freed, so each such temporary costs a page fault per 4 KB touched — on the cubic proof at
(K, v) = (20, 512) that was half the run time. `retain_freed_memory()` raises the mmap and
trim thresholds to RETAIN_BYTES: blocks below it come from the heap, and up to RETAIN_BYTES
of freed memory at its top stay mapped for the next temporary.

Memory: the process keeps at most RETAIN_BYTES more than it uses (plus heap fragmentation,
which the proofs' repeated same-size temporaries keep small); it is never more than the peak
it has already had plus RETAIN_BYTES. Values computed are unaffected. A no-op where the C
library has no `mallopt` (macOS, musl).

The CLI calls it once per computing command; library users and benchmarks may call it too.
"""

from __future__ import annotations

import ctypes
import functools

RETAIN_BYTES = 2**28  # 256 MiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def retain_freed_memory() -> bool:
    """Set the thresholds (once per process); True if the C library accepted both."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, RETAIN_BYTES) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, RETAIN_BYTES) == 1
    return mmap_ok and trim_ok
