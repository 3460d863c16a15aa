"""Give freed heap back to the operating system while a reference peer is idle.

Under connect/close churn glibc keeps the pages of freed connection state in its arenas, so RSS
only ever grows even when nothing is live (measured: ``ci/bench_ref_memory.py``). Every
``interval_s`` the trimmer calls ``malloc_trim(0)`` (glibc only; a no-op elsewhere), so a peer that
went quiet shrinks back; a long ``connformance up`` session stays flat.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util

__all__ = ["TRIM_INTERVAL_S", "trim_forever"]

TRIM_INTERVAL_S = 10.0


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


async def trim_forever(interval_s: float = TRIM_INTERVAL_S) -> None:
    """Trim every ``interval_s`` until cancelled; returns at once without glibc."""
    trim = _malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(interval_s)  # a period, not a synchronisation
        trim(0)
