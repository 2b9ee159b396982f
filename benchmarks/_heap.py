"""Keep freed memory in the process heap (glibc), for timings that compare two code paths.

Without it every megabyte-sized temporary is a fresh ``mmap`` whose pages fault in on first
touch, and glibc's adaptive thresholds make that depend on the allocation history: a
``(16, 4, 64, 64)`` diffusion step measured from 170 to 340 us from run to run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform


def keep_freed_memory() -> bool:
    """glibc: serve large blocks from the heap and never return freed memory; whether it applied."""
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return False
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    # the values are C ints: a larger Python int would wrap (a trim threshold of 0 trims on every free)
    return bool(libc.mallopt(m_mmap_threshold, 2**30) and libc.mallopt(m_trim_threshold, 2**31 - 1))
