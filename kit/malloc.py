"""Fewer glibc malloc arenas for processes that host the Temporal SDK's native threads.

glibc gives a thread that finds the shared arena busy an arena of its own, up to eight per core, and frees
little of them back. The SDK core runs dozens of tokio threads (48 in a worker with 6,000 customers waiting
for KYC): their 64 MB arenas held 126 MB of a 350 MB worker (/proc/<pid>/smaps). Two arenas are what
`MALLOC_ARENA_MAX=2` would give, set here so every way of starting the process gets it (it must precede
the threads: call it first thing). Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Caps glibc's malloc arenas; whether it could (False where malloc is not glibc's)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
