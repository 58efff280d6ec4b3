"""Keep freed memory in the process instead of handing it back to the kernel after every update.

glibc serves every allocation above 32 MiB with its own ``mmap`` and unmaps it on
free. A pixel update allocates and frees about 1 GB of such tensors (uint8 batch
as float, conv activations and their gradients), so each update used to start on
fresh pages: ≈ 2.5M page faults, 30% of the update's time on the 2-core dev machine.
With mmap off for the heap and no trimming, freed blocks are reused by the next
update. What the trial computes is unchanged; the process keeps its peak heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Apply once per process; True where glibc took the settings (False elsewhere: macOS, musl)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it: musl's mallopt is a no-op)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # Large blocks then come from the heap (glibc still falls back to mmap if the heap
    # cannot grow), and freed memory at the heap's top is never returned.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
